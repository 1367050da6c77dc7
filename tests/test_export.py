import json
import os

import keras
import numpy as np

import data
import export


def test_tflite_exports_load_and_agree_with_the_keras_model(trained, tmp_path):
    written = export.export(trained["model"], str(tmp_path), ("float16", "int8"),
                            calibration_path=trained["data"], calibration_images=24)
    paths, _ = data.list_labeled_images(trained["data"])
    images = np.stack([data.load_image(p, 64) for p in paths]).astype("float32")
    expected = keras.models.load_model(trained["model"], compile=False).predict(images, verbose=0)[:, 0]
    assert np.ptp(expected) > 1e-3  # the comparison below is not vacuous
    threshold = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))["threshold"]
    for kind in ("float16", "int8"):
        sidecar = json.load(open(os.path.splitext(written[kind])[0] + ".json"))
        assert sidecar["threshold"] == threshold and sidecar["format"] == f"tflite {kind}"
        got = export.TFLiteModel(written[kind]).predict(images)
        assert got.shape == expected.shape
        assert np.ptp(got) > 0 and 0 <= got.min() and got.max() <= 1
        if kind == "float16":  # rounding of the weights only
            assert np.max(np.abs(got - expected)) < 0.03
        else:
            # 8-bit activations (output steps of 1/256) calibrated on 24 images of a barely
            # trained model: close on average; bench/bench.py measures label agreement on dev.
            assert np.mean(np.abs(got - expected)) < 0.05
    sizes = {kind: os.path.getsize(path) for kind, path in written.items()}
    assert sizes["int8"] < sizes["float16"] < os.path.getsize(trained["model"])


def test_int8_without_calibration_images_is_a_clear_error(trained, tmp_path, capsys):
    assert export.main(["--model_path", trained["model"], "--output_dir", str(tmp_path)]) == 2
    assert "--calibration_path" in capsys.readouterr().err
