"""The scoring paths that users wait on import no TensorFlow once the model is converted:
predict.py and test_script.py on a cached OpenVINO model, their --help, and the Grad-CAM
sheet; and what TensorFlow prints at start-up stays off the terminal unless --verbose 2."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from facegender.runtime import conversion
from conftest import ROOT, face_like_image

pytestmark = pytest.mark.skipif(not conversion.openvino_available(), reason="needs OpenVINO")

TF_START_UP = ("absl::InitializeLog", "oneDNN custom operations")


def script(name, *args, importtime=False, env=None):
    """Run one of the scripts in a fresh Python; returns the CompletedProcess."""
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, os.path.join(ROOT, name), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


def imported(stderr):
    """The top-level packages a `python -X importtime` run imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_answers_without_tensorflow():
    for name in ("predict.py", "test_script.py"):
        done = script(name, "--help", importtime=True)
        assert done.returncode == 0 and "usage:" in done.stdout
        assert not {"tensorflow", "keras"} & imported(done.stderr), name


@pytest.mark.slow
def test_predict_and_test_script_on_a_cached_conversion_import_no_tensorflow(trained, tmp_path):
    cache = str(tmp_path / "cache")
    photo = tmp_path / "one.jpg"
    face_like_image(1, np.random.default_rng(5)).save(photo)
    common = ["--model_path", trained["model"], "--cache_dir", cache, "--verbose", "0"]

    # The first run converts the model (Keras, hence TensorFlow), quietly.
    first = script("predict.py", str(photo), *common, "--output", str(tmp_path / "a.csv"))
    assert first.returncode == 0, first.stderr
    assert not any(line in first.stderr for line in TF_START_UP), first.stderr
    # A fresh process with the conversion cached: the same row, and no TensorFlow or Keras.
    again = script("predict.py", str(photo), *common, "--output", str(tmp_path / "b.csv"),
                   importtime=True)
    assert again.returncode == 0, again.stderr
    assert "openvino" in imported(again.stderr)
    assert not {"tensorflow", "keras"} & imported(again.stderr)
    rows = [list(csv.reader(open(tmp_path / f"{n}.csv"))) for n in "ab"]
    assert rows[0] == rows[1] and len(rows[0]) == 2

    # test_script.py scores, copies the mistakes and draws their Grad-CAM sheet (threshold 0:
    # every female image is a mistake) on the cached conversion too.
    out = tmp_path / "eval"
    done = script("test_script.py", "--data_path", trained["data"], "--output_dir", str(out),
                  "--threshold", "0", *common, importtime=True)
    assert done.returncode == 0, done.stderr
    assert not {"tensorflow", "keras"} & imported(done.stderr)
    assert (out / "misclassified" / "contact_sheet.png").exists()
    assert "contact sheet of the 12 most confident mistakes" in done.stdout


def test_tensorflow_start_up_lines_are_hidden_unless_asked_for():
    code = ("import sys; from facegender.core import quiet; quiet.hide_tensorflow_start_up(); "
            "import tensorflow; "
            "sys.stderr.write('imported'); "
            "quiet.show_tensorflow_start_up() if sys.argv[1] == 'show' else None")
    runs = {}
    for mode in ("hide", "show"):
        runs[mode] = subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                    text=True, cwd=ROOT, timeout=120,
                                    env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"})
        assert runs[mode].returncode == 0, runs[mode].stderr
    assert runs["hide"].stderr == "imported"
    # What was hidden is TensorFlow's own start-up text, shown on request.
    assert any(line in runs["show"].stderr for line in TF_START_UP)
