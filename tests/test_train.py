import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from facegender.data import decoding, listing
from facegender.evaluation import metrics
from facegender.data import pipeline
from facegender.data import splits
from facegender.cli import train as train_model
from facegender.training.callbacks import EpochCheckpoint, TrainingState, ValidationMetrics
from conftest import IMAGE_SIZE, ROOT, TINY_TRAINING
from facegender.model.losses import BinaryFocalLoss
from facegender.core.common import ModelError
from facegender.model.network import build_backbone
from facegender.model.sidecar import load_sidecar
from facegender.training.result import TrainingResult, training_report


@pytest.fixture
def messages(caplog):
    """The package's log records at INFO and up (conftest gives each test the package's
    logger as an importing program finds it: passing its records up to pytest's handler)."""
    caplog.set_level(logging.INFO, logger="facegender")
    return caplog


def test_training_writes_every_output(trained):
    out = trained["dir"]
    assert os.path.getsize(trained["model"]) > 0
    assert os.path.getsize(os.path.join(out, "training_curves.png")) > 0
    assert any(os.path.exists(os.path.join(out, f"model_architecture.{ext}"))
               for ext in ("png", "txt"))
    with open(os.path.join(out, "model_balanced.json")) as f:
        sidecar = json.load(f)
    assert sidecar["class_names"] == ["female", "male"]
    assert "version" not in sidecar  # no --model_version: no name made up
    assert sidecar["input_size"] == IMAGE_SIZE
    assert 0 < sidecar["threshold"] < 1
    assert sidecar["epochs_run"] == 1 and sidecar["config"]["epochs"] == 1
    assert set(sidecar["validation"]["per_class_accuracy"]) == {"female", "male"}
    # The sidecar ships to other machines: no path of this one (the fixture's are absolute).
    assert os.path.dirname(trained["data"]) not in json.dumps(sidecar)
    # Each epoch logs the validation macro-F1 at its best threshold; with one epoch, that is
    # the model that was saved, so it matches the sidecar's.
    with open(os.path.join(out, "model_balanced_checkpoints", "state.json")) as f:
        history = json.load(f)["history"]
    assert history["val_macro_f1"] == [pytest.approx(sidecar["validation"]["macro_f1"])]
    # No temporary files are left behind by the atomic saves.
    assert not [n for n in os.listdir(out) if n.startswith(".partial-")]


def test_train_returns_its_report_and_the_script_prints_it(trained, tmp_path, capsys):
    # The fixture's finished one-epoch run, resumed with nothing left to train: it only tunes
    # the threshold and saves. First as a program that imports the package calls it, then as
    # the script.
    from facegender.training import run
    out = tmp_path / "again"
    shutil.copytree(trained["dir"], out)
    model_path = str(out / "model_balanced.h5")
    argv = TINY_TRAINING + ["--data_path", trained["data"], "--weights", trained["weights"],
                            "--trainable_layers", "0", "--epochs", "1", "--resume",
                            "--output", model_path, "--overwrite", "--model_version", "0.9 (test)"]
    capsys.readouterr()
    result = run.train(train_model.parse_args(argv))
    printed = capsys.readouterr().out
    assert isinstance(result, TrainingResult)
    with open(out / "model_balanced.json") as f:
        sidecar = json.load(f)
    assert sidecar["version"] == "0.9 (test)"  # --model_version, where users read it
    assert result.written == (model_path, str(out / "model_balanced.json"),
                              str(out / "training_curves.png"), result.architecture)
    assert all(os.path.getsize(path) > 0 for path in result.written)
    assert result.tuned_for == "macro_f1" and result.threshold == sidecar["threshold"]
    assert result.validation["macro_f1"] == sidecar["validation"]["macro_f1"]
    assert ({name: list(counts) for name, counts in result.validation["per_class_accuracy"].items()}
            == sidecar["validation"]["per_class_accuracy"])
    assert ([row["macro_f1"] for row in result.validation_sources]
            == [row["macro_f1"] for row in sidecar["validation_sources"]])
    assert result.unreadable_images == () and result.face_geometry is None
    # The library printed none of it: the report is the caller's to print.
    assert "validation at threshold" not in printed and "wrote " not in printed
    assert train_model.main(argv) == 0
    assert "\n" + training_report(result) + "\n" in capsys.readouterr().out


def test_training_report_names_every_source_and_what_was_skipped():
    from facegender.faces.finder import parse_geometry
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.1, 0.7, 0.6, 0.9])
    result = TrainingResult(
        threshold=0.65, tuned_for="worst_recall",
        validation=metrics.evaluation_report(y, scores, 0.65),
        validation_sources=tuple(metrics.group_table(["a"] * 4 + ["b"] * 4, y, scores, 0.65)),
        model="m.h5", sidecar="m.json", curves="training_curves.png",
        architecture="model_architecture.txt", unreadable_images=("x.jpg", "y.jpg"),
        face_geometry=parse_geometry("aligned"), images_without_a_face=3)
    lines = training_report(result).splitlines()
    assert lines[0] == "validation at threshold 0.65 (tuned for the worst (source, class) recall):"
    assert "  female accuracy: 3/4" in lines and "    male accuracy: 3/4" in lines
    assert "  a: macro-F1 1.0000" in lines and "  b: macro-F1 0.5000" in lines
    assert "wrote m.h5, m.json, training_curves.png, model_architecture.txt" in lines
    assert "skipped 2 unreadable image(s); listed in the sidecar" in lines
    assert lines[-1] == "faces cut to aligned 1; no face found in 3 image(s), used as given"
    # One validation source, nothing skipped, images as given: none of those lines.
    plain = dataclasses.replace(result, validation_sources=result.validation_sources[:1],
                                unreadable_images=(), face_geometry=None)
    text = training_report(plain)
    assert "macro-F1 1.0000" not in text and "skipped" not in text and "faces cut" not in text
    assert text.endswith("wrote m.h5, m.json, training_curves.png, model_architecture.txt")


def test_logged_validation_scores_are_what_keras_evaluate_gives(trained):
    # One pass over the validation images logs the loss and accuracy that fit's own validation
    # would: Keras' evaluate of the saved (only) epoch's model on the same batches agrees.
    args = train_model.parse_args(TINY_TRAINING + ["--data_path", trained["data"]])
    val_paths, val_labels, _, _ = splits.split_data(args).val
    val_ds = pipeline.make_train_dataset(val_paths, val_labels, decoding.ImageReader(IMAGE_SIZE), 8,
                                     oversample=0, augment=False, shuffle=False)
    # The saved file is inference-only: compile it as training did.
    model = keras.models.load_model(trained["model"], compile=False)
    model.compile(loss=BinaryFocalLoss(args.focal_alpha, args.focal_gamma), metrics=["accuracy"])
    loss, accuracy = model.evaluate(val_ds, verbose=0)
    with open(os.path.join(trained["dir"], "model_balanced_checkpoints", "state.json")) as f:
        history = json.load(f)["history"]
    assert history["val_loss"] == [pytest.approx(loss, rel=1e-4)]
    assert history["val_accuracy"] == [pytest.approx(accuracy)]


RELOAD = """
import sys, numpy as np
import keras
from facegender.data import decoding
from facegender.model import losses
x = np.stack([decoding.load_image(p, {size}) for p in {paths!r}]).astype("float32")
for name, load in {loads!r}.items():
    exec(load)  # sets `model`
    np.savez({out!r} + name + ".npz", *model.get_weights())
np.save({out!r} + "scores.npy", model.predict(x, verbose=0)[:, 0])
"""


@pytest.mark.slow
def test_training_from_scratch_with_weights_none_writes_a_loadable_model(image_folder, tmp_path):
    model_path = str(tmp_path / "scratch.h5")
    # The head alone: what is tested is the --weights none path and the files it writes.
    assert train_model.main(TINY_TRAINING + ["--data_path", image_folder, "--weights", "none",
                                             "--image_size", "32", "--epochs", "1",
                                             "--trainable_layers", "0",
                                             "--output", model_path]) == 0
    for name in ("scratch.h5", "scratch.json", "training_curves.png"):
        assert os.path.getsize(tmp_path / name) > 0
    import keras
    model = keras.models.load_model(model_path, compile=False)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 1)


@pytest.mark.slow
def test_saved_model_reloads_in_a_fresh_process_and_predicts_the_same(trained, tmp_path):
    # In a new Python process, in graph mode as the tools run. Each load's weights are compared,
    # and the last one predicts: one predict function to trace instead of three.
    paths, _ = listing.list_labeled_images(trained["data"])
    paths = paths[:4] + paths[-4:]
    h5 = trained["model"]
    ckpt = os.path.join(trained["dir"], "model_balanced_checkpoints", "last.keras")
    loads = {
        "inference": f"model = keras.models.load_model({h5!r}, compile=False)",
        "default": f"model = keras.models.load_model({h5!r})",
        # The checkpoint reloads compiled, with its loss.
        "checkpoint": f"model = keras.models.load_model({ckpt!r}); "
                      "assert isinstance(model.loss, losses.BinaryFocalLoss)",
    }
    out = str(tmp_path / "p_")
    code = RELOAD.format(loads=loads, size=IMAGE_SIZE, paths=paths, out=out)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    model = keras.models.load_model(h5, compile=False)
    for name in loads:
        with np.load(out + name + ".npz") as saved:
            weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        assert len(weights) == len(model.weights)
        for got, expected in zip(weights, model.get_weights()):
            np.testing.assert_array_equal(got, expected)
    scores = np.load(out + "scores.npy")
    x = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    expected = model.predict(x, verbose=0)[:, 0]
    # The predictions differ between images, so comparing them is not vacuous.
    assert np.ptp(expected) > 1e-4
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_epochs_0_only_tunes_the_threshold_of_an_init_model(trained, tmp_path, capsys):
    out = tmp_path / "retuned.h5"
    assert train_model.main(TINY_TRAINING + [
        "--data_path", trained["data"], "--init_model", trained["model"], "--recipe", "fast",
        "--image_size", str(IMAGE_SIZE), "--epochs", "0", "--output", str(out)]) == 0
    before = keras.models.load_model(trained["model"], compile=False).get_weights()
    after = keras.models.load_model(out, compile=False).get_weights()
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # nothing trained
    with open(tmp_path / "retuned.json") as f:
        sidecar = json.load(f)
    with open(os.path.join(trained["dir"], "model_balanced.json")) as f:
        original = json.load(f)
    # The same model on the same validation images: the same threshold and scores.
    assert sidecar["epochs_run"] == 0 and sidecar["threshold"] == original["threshold"]
    assert sidecar["validation"]["macro_f1"] == pytest.approx(original["validation"]["macro_f1"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train_model.main(["--data_path", trained["data"], "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--init_model" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["trained", "shipped"])
def test_saved_file_is_inference_only_and_matches_its_sidecar(which, trained):
    import h5py
    from facegender.model import network as model_lib
    path = trained["model"] if which == "trained" else os.path.join(ROOT, "model_balanced.h5")
    with h5py.File(path) as f:
        assert "model_weights" in f
        assert "optimizer_weights" not in f and "training_config" not in f.attrs
    sidecar = load_sidecar(path)
    model = model_lib.load_model(path)
    assert model.output_shape == (None, 1)
    assert model_lib.input_size(model) == sidecar["input_size"]
    assert sidecar["class_names"] == ["female", "male"] and 0 < sidecar["threshold"] < 1


@pytest.mark.slow
@pytest.mark.parametrize("monitor", ["val_macro_f1", "val_worst_recall"])
def test_monitor_keeps_the_epoch_with_the_best_score(trained, tmp_path, capsys, monitor):
    # Resume the fixture's one-epoch run for one more epoch, now picking by a validation score:
    # the saved model must be the epoch whose logged score is the highest, at a threshold
    # chosen for that score, and score exactly that.
    import shutil
    out = tmp_path / "by_score"
    shutil.copytree(trained["dir"], out)
    code = train_model.main(TINY_TRAINING + [
        "--data_path", trained["data"], "--weights", trained["weights"], "--epochs", "2",
        "--trainable_layers", "0",  # the fixture's: a resume must not contradict it
        "--output", str(out / "model_balanced.h5"), "--overwrite", "--resume", "--monitor", monitor,
        "--patience", "5"])
    assert code == 0
    assert f"from now on --monitor {monitor} picks it" in capsys.readouterr().out
    with open(out / "model_balanced.json") as f:
        sidecar = json.load(f)
    with open(out / "model_balanced_checkpoints" / "state.json") as f:
        state = json.load(f)
    scores = state["history"][monitor]
    assert len(scores) == 2 and state["monitor"] == monitor
    assert sidecar["best_epoch_by"] == monitor
    assert sidecar["best_epoch"] == state["best_epoch"] == int(np.argmax(scores)) + 1
    if monitor == "val_macro_f1":
        assert sidecar["validation"]["macro_f1"] == pytest.approx(max(scores))
    else:
        # One validation source: the worst recall is the lower of the two classes'.
        recalls = [c / n for c, n in sidecar["validation"]["per_class_accuracy"].values()]
        assert min(recalls) == pytest.approx(max(scores))
        assert sidecar["threshold_source"].startswith("best worst (source, class) recall")


def test_patience_counters_survive_a_resume(tmp_path):
    # A run killed two epochs after its best must still stop when an uninterrupted one would:
    # the checkpoint saves the callbacks' counters and puts them back after fit resets them.
    import keras

    def plateau():
        return {"early_stopping": keras.callbacks.EarlyStopping("val_loss", patience=3),
                "reduce_lr": keras.callbacks.ReduceLROnPlateau("val_loss", patience=5)}

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    before = plateau()
    checkpoint = EpochCheckpoint(str(tmp_path), TrainingState(monitor="val_loss"), before)
    checkpoint.set_model(model)
    for epoch, val_loss in enumerate([0.5, 0.4, 0.45, 0.47]):
        logs = {"loss": 1.0, "val_loss": val_loss}
        for callback in [*before.values(), checkpoint]:
            callback.set_model(model)
            if epoch == 0:
                callback.on_train_begin()
            callback.on_epoch_begin(epoch)
            callback.on_epoch_end(epoch, logs)
    with open(tmp_path / "state.json") as f:
        state = json.load(f)
    assert state["best_epoch"] == 2

    after = plateau()
    resumed = EpochCheckpoint(str(tmp_path), TrainingState.load(tmp_path / "state.json"), after)
    for callback in [*after.values(), resumed]:
        callback.set_model(model)
        callback.on_train_begin()
    assert after["early_stopping"].wait == 2 and after["early_stopping"].best == 0.4
    assert after["reduce_lr"].wait == 2 and after["reduce_lr"].best == 0.4
    after["early_stopping"].on_epoch_end(4, {"val_loss": 0.46})
    assert model.stop_training  # the third epoch without improvement, counting across the resume


@pytest.mark.slow
def test_init_model_fine_tunes_a_saved_model_at_a_larger_size(trained, tmp_path, capsys):
    import keras
    from facegender.model.network import build_model
    saved = keras.models.load_model(trained["model"], compile=False)
    paths, _ = listing.list_labeled_images(trained["data"])
    x = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in paths[:6]]).astype("float32")
    # At the size it was trained at, the copy is the saved model, head included.
    copy = build_model(IMAGE_SIZE, init_model=trained["model"])
    np.testing.assert_allclose(copy.predict(x, verbose=0), saved.predict(x, verbose=0), atol=1e-6)

    bigger = str(tmp_path / "bigger.h5")
    code = train_model.main(TINY_TRAINING + [
        "--data_path", trained["data"], "--init_model", trained["model"], "--weights", "nowhere.h5",
        "--image_size", str(IMAGE_SIZE + 32), "--warmup_epochs", "5", "--epochs", "1",
        "--trainable_layers", "0", "--output", bigger])
    assert code == 0
    assert "no head warm-up" in capsys.readouterr().out  # the saved head is kept, not retrained
    with open(tmp_path / "bigger.json") as f:
        assert json.load(f)["input_size"] == IMAGE_SIZE + 32
    assert keras.models.load_model(bigger, compile=False).input_shape[1] == IMAGE_SIZE + 32


def test_init_model_of_another_shape_is_a_clear_error(trained, tmp_path, capsys):
    code = train_model.main(TINY_TRAINING + [
        "--data_path", trained["data"], "--init_model", trained["model"], "--dense_units", "16",
        "--output", str(tmp_path / "m.h5")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and trained["model"] in err and "--dense_units" in err


def test_validation_folder_is_used_when_present(tmp_path):
    from conftest import make_image_folder
    make_image_folder(str(tmp_path / "train"), per_class=4, seed=1)
    make_image_folder(str(tmp_path / "dev"), per_class=3, seed=2)
    args = train_model.parse_args(["--data_path", str(tmp_path)])
    (tr_paths, tr_y, _, _), (va_paths, va_y, _, _), how, _ = splits.split_data(args)
    assert len(tr_paths) == 8 and len(va_paths) == 6 and "dev" in how


def test_stratified_split_keeps_both_classes(image_folder):
    args = train_model.parse_args(["--data_path", image_folder, "--val_split", "0.25"])
    (_, tr_y, _, _), (_, va_y, _, _), how, _ = splits.split_data(args)
    assert list(np.bincount(va_y)) == [3, 3] and list(np.bincount(tr_y)) == [9, 9]
    assert "stratified" in how


def test_bad_data_path_is_one_line_and_exit_2(tmp_path, capsys):
    assert train_model.main(["--data_path", str(tmp_path / "missing"), "--weights", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "no such folder" in err


def test_missing_weights_file_is_a_clear_error(image_folder, tmp_path, capsys):
    code = train_model.main(["--data_path", image_folder, "--weights", str(tmp_path / "w.h5"),
                             "--image_size", "32", "--output", str(tmp_path / "m.h5")])
    assert code == 2
    assert "weights file not found" in capsys.readouterr().err


def test_imagenet_without_internet_fails_with_a_hint(monkeypatch, tmp_path):
    # Point Keras' cache at an empty folder so it must download; this machine has no internet.
    # How fast it gives up is bench/'s to measure, not a test's.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("os.path.expanduser", lambda p: str(tmp_path) if p == "~" else p)
    try:
        build_backbone(96, "imagenet")
    except ModelError as err:
        assert "--weights PATH" in str(err)
    else:
        pytest.skip("this machine can download the ImageNet weights")


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import train_model
sys.exit(train_model.main({args!r}))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(image_folder, backbone_weights, tmp_path):
    # In a subprocess, so in graph mode as a user runs it. Tracing the replicated gradient of
    # the whole backbone costs most of the run; the head alone exercises the same replicated
    # step (per-replica batches, the gradients summed across replicas) at a fraction of it.
    args = TINY_TRAINING + ["--data_path", image_folder, "--weights", backbone_weights,
                            "--epochs", "1", "--batch_size", "4", "--strategy", "mirrored",
                            "--trainable_layers", "0", "--image_size", "32",
                            "--output", str(tmp_path / "m.h5")]
    done = subprocess.run([sys.executable, "-c", MIRRORED.format(args=args)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mirrored strategy: 2 replicas, global batch 8" in done.stdout
    import keras
    model = keras.models.load_model(tmp_path / "m.h5", compile=False)
    assert model.output_shape == (None, 1)


def test_validation_metrics_log_the_worst_source_and_name_it(messages):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss=keras.losses.BinaryCrossentropy())
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.1, 0.7, 0.6, 0.9], np.float32)  # "b" is harder
    sources = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    callback = ValidationMetrics(lambda m: (y, scores, sources), names=["a", "b"])
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    threshold, worst = metrics.best_threshold(y, scores, groups=sources)
    assert logs["val_macro_f1"] == worst < 1.0
    assert logs["val_accuracy"] == np.mean((scores > 0.5) == (y == 1))
    recall_at, worst_recall = metrics.best_threshold(y, scores, groups=sources,
                                                     criterion="worst_recall")
    assert logs["val_worst_recall"] == worst_recall == 0.5  # b's two women: 0.1 and 0.7
    said = [(r.name, r.levelno, r.getMessage()) for r in messages.records]
    assert ("facegender.training.callbacks", logging.INFO,
            f"epoch 1: worst validation source b, macro-F1 {worst:.4f} at threshold "
            f"{threshold:.2f}") in said
    # Every (source, class) here holds two images, fewer than a recall needs to count, so no
    # worst cell is named.
    assert not [m for m in messages.messages if "worst validation recall" in m]


@pytest.mark.parametrize("flags", [["--dropout", "1.5"], ["--lr_factor", "1.0"],
                                   ["--dense_units", "0"], ["--val_limit", "-1"],
                                   ["--epoch_images", "0"], ["--focal_gamma", "-1"],
                                   ["--class_weights", "1", "-1"], ["--learning_rate", "0"]])
def test_a_flag_out_of_range_is_one_line_before_any_work(tmp_path, capsys, flags):
    # The data folder does not exist: the flag must be refused before anything is read.
    with pytest.raises(SystemExit) as stop:
        train_model.parse_args(["--data_path", str(tmp_path / "nowhere"), *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: {flags[0]} " in err and ": must be" in err
