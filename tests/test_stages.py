"""The fast recipe's stages before the end-to-end fine-tune: the top blocks on cached feature
maps, and the rule that an end-to-end epoch must beat them to be kept (stages.py)."""

import json

import keras
import numpy as np
import pytest

from facegender.model import network as model_lib
from facegender.training import stages
from facegender.data import splits
from facegender.cli import train as train_model
from facegender.training.callbacks import EpochCheckpoint, TrainingState
from conftest import IMAGE_SIZE, TINY_TRAINING


@pytest.mark.slow
def test_top_block_fine_tune_trains_the_top_blocks_and_starts_the_fine_tune(
        image_folder, backbone_weights, tmp_path):
    # The stage must change the blocks above the cut and the head, leave the frozen blocks below
    # it as they were, and hand the weights it kept to the end-to-end fine-tune.
    args = train_model.parse_args(TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--feature_epochs", "2",
        "--feature_learning_rate", "1e-2", "--cache_dir", str(tmp_path / "cache")])
    train, val, _, _ = splits.split_data(args)
    model = model_lib.build_model(IMAGE_SIZE, backbone_weights)
    backbone = model_lib.backbone_of(model)
    names = [layer.name for layer in backbone.layers]
    cut = names.index(model_lib.FEATURE_MAP_LAYER)
    below = [w for layer in backbone.layers[:cut + 1] for w in layer.weights]
    above = [w for layer in backbone.layers[cut + 1:] for w in layer.weights]
    before = {id(w): np.array(w) for w in below + above}
    score, history = stages.fine_tune_top_blocks(model, train, val, args, str(tmp_path / "ckpt"))
    assert all(np.array_equal(before[id(w)], np.array(w)) for w in below)
    assert any(not np.array_equal(before[id(w)], np.array(w)) for w in above)
    assert len(history["val_macro_f1"]) == 2 and score == min(history["val_loss"])
    with open(tmp_path / "ckpt" / "feature_stage.json") as f:
        assert json.load(f)["history"] == history
    # The kept weights are the ones the end-to-end stage starts from (and falls back to).
    kept = model_lib.build_model(IMAGE_SIZE, "none")
    kept.load_weights(str(tmp_path / "ckpt" / "best.weights.h5"))
    x = np.random.default_rng(0).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(kept.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    keras.backend.clear_session()


def test_an_epoch_must_beat_the_top_block_stage_to_be_kept(tmp_path):
    history = {"loss": [1.0, 1.0], "val_loss": [0.5, 0.4], "val_macro_f1": [0.8, 0.9]}
    for monitor, baseline, best in (("val_loss", 0.3, 0), ("val_loss", 0.45, 2),
                                    ("val_loss", None, 2), ("val_macro_f1", 0.95, 0),
                                    ("val_macro_f1", 0.85, 2), ("val_loss", 0.4, 0)):
        checkpoint = EpochCheckpoint(str(tmp_path), TrainingState(history=history, monitor=monitor,
                                                                  baseline=baseline))
        assert checkpoint.best_epoch() == best, (monitor, baseline)


@pytest.mark.slow
def test_fast_recipe_stages_run_in_one_command(image_folder, backbone_weights, tmp_path):
    model_path = str(tmp_path / "staged.h5")
    assert train_model.main(TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "1",
        "--warmup_epochs", "2", "--feature_epochs", "1", "--cache_dir", str(tmp_path / "cache"),
        "--output", model_path]) == 0
    with open(tmp_path / "staged.json") as f:
        sidecar = json.load(f)
    with open(tmp_path / "staged_checkpoints" / "state.json") as f:
        state = json.load(f)
    assert len(sidecar["feature_stage"]["history"]["val_loss"]) == 1
    assert state["baseline"] == pytest.approx(sidecar["feature_stage"]["history"]["val_loss"][0])
    assert sidecar["best_epoch"] in (0, 1) and sidecar["best_epoch"] == state["best_epoch"]
