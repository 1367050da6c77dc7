import json
import os

import keras
import numpy as np
import pytest

from facegender.data import decoding, listing
from facegender.cli import export as export_cli
from facegender.model import export
from conftest import tree_hashes


@pytest.mark.slow
def test_float16_export_loads_and_agrees_with_the_keras_model(trained, tmp_path, capsys):
    # The int8 export, and its size against float16, are checked below on a model 8 bits can
    # represent; converting the MobileNetV2 twice would double the cost of this test.
    assert export_cli.main(["--model_path", trained["model"], "--output_dir", str(tmp_path),
                            "--formats", "float16"]) == 0
    printed = capsys.readouterr().out
    # Only what was written, not Keras's listing of the SavedModel it converts through.
    stem = os.path.splitext(os.path.basename(trained["model"]))[0]
    written = {"float16": str(tmp_path / f"{stem}_float16.tflite")}
    assert printed.startswith(f"wrote {written['float16']} (") and printed.count("\n") == 1
    paths, _ = listing.list_labeled_images(trained["data"])
    images = np.stack([decoding.load_image(p, 64) for p in paths]).astype("float32")
    keras_model = keras.models.load_model(trained["model"], compile=False)
    expected = keras_model.predict(images, verbose=0)[:, 0]
    assert np.ptp(expected) > 1e-3  # the comparison below is not vacuous
    threshold = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))["threshold"]
    sidecar = json.load(open(os.path.splitext(written["float16"])[0] + ".json"))
    assert sidecar["threshold"] == threshold and sidecar["format"] == "tflite float16"
    got = export.TFLiteModel(written["float16"]).predict(images)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 0.03  # rounding of the weights only
    assert os.path.getsize(written["float16"]) < 0.6 * os.path.getsize(trained["model"])


def test_int8_export_agrees_with_a_model_it_can_represent(image_folder, tmp_path):
    # A MobileNetV2 a step away from random weights has activation ranges that 8 bits cannot
    # follow, so the tiny trained model says nothing about int8 quality. A small convolutional
    # net can be represented, and checks what export.py controls: calibration on the images as
    # the model sees them (raw 0..255), float input and output. Agreement on real faces with
    # the shipped model is measured by bench/bench.py.
    from facegender.model import network as model_lib

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Rescaling(1 / 127.5, offset=-1.0),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        # Large output weights spread the scores, so agreement is tested over a wide range.
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=10.0)),
    ])
    path = str(tmp_path / "small.h5")
    model_lib.save_model(model, path, {"threshold": 0.42})
    written = export.export(path, str(tmp_path), ("float16", "int8"),
                            calibration_path=image_folder, calibration_images=24)
    int8 = written["int8"]
    # 8-bit weights take about half the room of 16-bit ones (the MobileNetV2's float16 export
    # is checked above; converting it a second time for this would double that test's cost).
    assert os.path.getsize(int8) < os.path.getsize(written["float16"])
    sidecar = json.load(open(os.path.splitext(int8)[0] + ".json"))
    assert sidecar["threshold"] == 0.42 and sidecar["format"] == "tflite int8"
    paths, _ = listing.list_labeled_images(image_folder)
    images = np.stack([decoding.load_image(p, 64) for p in paths]).astype("float32")
    expected = model.predict(images, verbose=0)[:, 0]
    got = export.TFLiteModel(int8).predict(images)
    assert np.ptp(expected) > 0.1  # the comparison is not vacuous
    assert np.mean(np.abs(got - expected)) < 0.02
    assert np.corrcoef(got, expected)[0, 1] > 0.95


def test_int8_without_calibration_images_is_a_clear_error(trained, tmp_path, capsys):
    assert export_cli.main(["--model_path", trained["model"], "--output_dir", str(tmp_path)]) == 2
    assert "--calibration_path" in capsys.readouterr().err


def test_tflite_runs_on_litert_when_installed_and_on_tensorflow_without(monkeypatch):
    import sys
    import tensorflow as tf
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    assert export.tflite_interpreter_class() is litert.Interpreter
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert export.tflite_interpreter_class() is tf.lite.Interpreter


def test_int8_with_0_calibration_images_is_refused_and_nothing_written(trained, image_folder,
                                                                        tmp_path, capsys):
    before = tree_hashes(trained["dir"]), tree_hashes(image_folder)
    with pytest.raises(SystemExit) as stop:
        export_cli.main(["--model_path", trained["model"], "--output_dir", str(tmp_path),
                     "--calibration_path", image_folder, "--calibration_images", "0"])
    assert stop.value.code == 2
    assert "--calibration_images 0: must be at least 1" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert (tree_hashes(trained["dir"]), tree_hashes(image_folder)) == before


def test_int8_on_images_that_do_not_decode_is_refused_and_nothing_written(trained, tmp_path,
                                                                          capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"face_{i}.jpg").write_bytes(b"not a JPEG")
    out = tmp_path / "out"
    out.mkdir()
    before = tree_hashes(trained["dir"]), tree_hashes(str(broken))
    code = export_cli.main(["--model_path", trained["model"], "--output_dir", str(out),
                        "--calibration_path", str(broken)])
    assert code == 2
    assert f"{broken}: none of its images decodes" in capsys.readouterr().err
    assert os.listdir(out) == []  # not even the float16 model, which was asked for first
    assert (tree_hashes(trained["dir"]), tree_hashes(str(broken))) == before


def test_an_output_dir_that_cannot_be_written_is_refused_before_converting(trained, tmp_path,
                                                                           capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = export_cli.main(["--model_path", trained["model"], "--output_dir", str(blocker / "out"),
                        "--formats", "float16"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--output_dir {blocker / 'out'}: cannot be written" in err[0]
