"""Messy real-world folders, broken model files, killed runs: clear messages, nothing lost."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from facegender.data import listing
from facegender.cli import evaluate as test_script
from facegender.evaluation.evaluate import copy_misclassified
from facegender.cli import train as train_model
from conftest import ROOT, TINY_TRAINING, make_image_folder, tree_hashes
from corpus import make_messy_folder


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("messy"))
    return root, make_messy_folder(root)


def evaluate(args, capsys=None):
    code = test_script.main(args + ["--verbose", "0"])
    return code


def test_listing_takes_every_image_once_and_nothing_else(messy):
    root, expected = messy
    paths, labels = listing.list_labeled_images(root)
    assert sorted(paths) == sorted(expected["readable"] + expected["unreadable"])
    assert not set(paths) & set(expected["ignored"])
    assert np.bincount(labels).tolist() == [21, 21]


def test_evaluation_reads_the_good_files_and_lists_the_bad_ones(messy, trained, tmp_path,
                                                                capsys):
    root, expected = messy
    before = tree_hashes(root)
    out = tmp_path / "eval"
    assert evaluate(["--data_path", root, "--model_path", trained["model"],
                     "--output_dir", str(out)]) == 0
    assert tree_hashes(root) == before  # inputs untouched
    results = json.load(open(out / "metrics.json"))
    assert results["images"] == len(expected["readable"])
    assert sorted(results["unreadable_images"]) == sorted(expected["unreadable"])
    printed = capsys.readouterr()
    assert f"skipped {len(expected['unreadable'])} unreadable image(s)" in printed.out
    assert "bomb.png" in printed.out and "decompression" in printed.out.lower()


def test_training_skips_the_bad_files_and_lists_them(messy, backbone_weights, tmp_path, capsys):
    root, expected = messy
    model_path = tmp_path / "m.h5"
    # With a head warm-up: a stage before fine-tuning that reads the images too.
    assert train_model.main(TINY_TRAINING + ["--data_path", root, "--weights", backbone_weights,
                                             "--epochs", "1", "--trainable_layers", "0",
                                             "--warmup_epochs", "1",
                                             "--output", str(model_path)]) == 0
    sidecar = json.load(open(tmp_path / "m.json"))
    assert sorted(sidecar["unreadable_images"]) == sorted(expected["unreadable"])
    # Each is warned about once, whatever the number of stages that read the images.
    warnings = capsys.readouterr().err
    assert all(warnings.count(f"skipping unreadable image {path} ") == 1
               for path in expected["unreadable"]), warnings


def test_a_folder_with_only_unreadable_images_is_exit_2(trained, tmp_path, capsys):
    for cls in ("female", "male"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "broken.jpg").write_bytes(b"nope")
    assert evaluate(["--data_path", str(tmp_path), "--model_path", trained["model"],
                     "--output_dir", str(tmp_path / "out")]) == 2
    assert "none of the images could be read" in capsys.readouterr().err


def test_one_class_evaluation_reports_what_it_can(trained, tmp_path, capsys):
    make_image_folder(str(tmp_path / "d"), per_class=3, names=("male",))
    out = tmp_path / "out"
    assert evaluate(["--data_path", str(tmp_path / "d"), "--model_path", trained["model"],
                     "--output_dir", str(out)]) == 0
    assert "no female images here" in capsys.readouterr().out
    results = json.load(open(out / "metrics.json"))
    assert results["model_threshold"]["per_class_accuracy"]["female"] == [0, 0]
    assert results["model_threshold"]["per_class_accuracy"]["male"][1] == 3


def test_one_class_training_names_the_missing_folder(tmp_path, capsys):
    make_image_folder(str(tmp_path), per_class=3, names=("Male",))
    assert train_model.main(["--data_path", str(tmp_path), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert os.path.join(str(tmp_path), "female") in err and "class folder missing" in err


def test_data_path_that_is_a_file_is_exit_2(trained, tmp_path, capsys):
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert evaluate(["--data_path", str(tmp_path / "file.jpg"),
                     "--model_path", trained["model"]]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_output_inside_the_data_folder_is_not_read_back(trained, tmp_path):
    folder = make_image_folder(str(tmp_path / "d"), per_class=4)
    out = os.path.join(folder, "female", "results")
    for _ in range(2):  # threshold 0: every female image is copied into out/misclassified
        assert evaluate(["--data_path", folder, "--model_path", trained["model"],
                         "--output_dir", out, "--threshold", "0"]) == 0
        assert json.load(open(os.path.join(out, "metrics.json")))["images"] == 8


def test_unwritable_output_dir_fails_before_predicting(trained, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert evaluate(["--data_path", trained["data"], "--model_path", trained["model"],
                     "--output_dir", str(tmp_path / "a_file" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a_file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_dir_is_exit_2(trained, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    assert evaluate(["--data_path", trained["data"], "--model_path", trained["model"],
                     "--output_dir", str(out)]) == 2


def test_model_files_that_cannot_be_used_are_one_line(trained, tmp_path, capsys):
    import keras
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(open(trained["model"], "rb").read()[:50000])
    inp = keras.Input((32, 32, 3))
    other = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inp)))
    other.save(tmp_path / "other.h5")
    for path, message in [(truncated, "not a loadable Keras model"),
                          (tmp_path / "other.h5", "expected square RGB images in and one")]:
        assert evaluate(["--data_path", trained["data"], "--model_path", str(path),
                         "--output_dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0


def test_model_with_code_is_refused_unless_unsafe(trained, tmp_path, capsys):
    import keras
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inp)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "lambda.h5")
    args = ["--data_path", trained["data"], "--model_path", str(tmp_path / "lambda.h5"),
            "--output_dir", str(tmp_path / "out")]
    assert evaluate(args) == 2
    assert "refused" in capsys.readouterr().err
    assert evaluate(args + ["--unsafe"]) == 0


def test_misclassified_names_never_escape_the_output_folder(tmp_path):
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "face.jpg"
    src.write_bytes(b"x")
    dest = copy_misclassified(str(tmp_path / "data" / ".." / "data" / "face.jpg"),
                              "male", "female", 0.2, str(tmp_path / "out"))
    assert os.path.realpath(dest).startswith(os.path.realpath(tmp_path / "out") + os.sep)


# ---------------------------------------------------------------------------
# Killed runs

SLOW_SAVE = """
import sys, time
import keras
from facegender.model import network as model_lib
model = keras.models.load_model({src!r}, compile=False)
real_save = keras.Model.save
def slow_save(self, path, *args, **kwargs):
    real_save(self, path, *args, **kwargs)
    with open(path, "r+b") as f:   # leave a half-written file, as a crash mid-save would
        f.truncate(1000)
    print("saving", flush=True)
    time.sleep(60)
keras.Model.save = slow_save
model_lib.save_model(model, {dest!r})
"""


def test_a_run_killed_during_a_save_leaves_the_old_model(trained, tmp_path):
    import shutil
    dest = tmp_path / "model_balanced.h5"
    shutil.copy(trained["model"], dest)
    before = open(dest, "rb").read()
    code = SLOW_SAVE.format(src=trained["model"], dest=str(dest))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "saving"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert open(dest, "rb").read() == before
    from facegender.model import network as model_lib
    model_lib.load_model(str(dest))


@pytest.mark.slow
def test_resume_after_a_kill_finishes_the_same_number_of_epochs(image_folder, backbone_weights,
                                                               tmp_path, capsys):
    # Also the plain resume: it continues from the last finished epoch, and the epochs run
    # before the kill keep their place in the history and the time count.
    output = str(tmp_path / "m.h5")
    cmd = [sys.executable, os.path.join(ROOT, "train_model.py")] + TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "2",
        "--trainable_layers", "0", "--output", output]  # the head alone: a smaller graph to trace
    state = tmp_path / "m_checkpoints" / "state.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # A generous bound on a busy machine, failed with a message: not a measure of speed.
        deadline = time.time() + 600
        while not state.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    if not state.exists():
        pytest.fail(f"no epoch finished within 600 s (exit code {proc.returncode}); the "
                    "training run to kill never got that far")
    done = json.load(open(state))["epochs_done"]
    assert done == 1, "the run should have been killed after its first epoch"
    assert not os.path.exists(output)
    assert train_model.main(cmd[2:] + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and f"after epoch {done}" in printed
    sidecar = json.load(open(tmp_path / "m.json"))
    assert sidecar["epochs_run"] == 2
    resumed = json.load(open(state))
    assert resumed["epochs_done"] == 2
    assert len(resumed["history"]["loss"]) == 2
    # The time of the epochs run before the kill is kept and counted.
    assert len(resumed["history"]["epoch_seconds"]) == 2
    assert sidecar["epoch_seconds_all_runs"] == pytest.approx(
        sum(resumed["history"]["epoch_seconds"]), abs=0.1)


@pytest.mark.slow
def test_evaluation_streams_two_thousand_images_in_bounded_memory(trained, tmp_path):
    """Peak memory grows far less than the images would take if all were held at once."""
    # One process evaluates 200 images, then 2,200: its peak after the second run may grow by
    # the second model load and conversion (about 23 MiB measured), not by the 2,000 extra
    # images (94 MiB as float32). One process rather than two saves a TensorFlow start-up.
    sizes = (200, 2200)
    script = (
        "import resource, sys; import test_script\n"
        "for folder, out in {runs!r}:\n"
        "    assert test_script.main(['--data_path', folder, '--model_path', {model!r}, "
        "'--output_dir', out, '--no_copy', '--verbose', '0', '--batch_size', '64']) == 0\n"
        "    print('peak KiB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    # One random image's PNG bytes, written under every name: the reader decodes each file
    # anew all the same, and writing is far cheaper than encoding thousands of images.
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=0)
    png = buffer.getvalue()
    runs = []
    for n in sizes:
        folder = tmp_path / f"d{n}"
        for cls in ("female", "male"):
            (folder / cls).mkdir(parents=True)
            for i in range(n // 2):
                (folder / cls / f"{i}.png").write_bytes(png)
        runs.append((str(folder), str(tmp_path / f"out{n}")))
    code = script.format(runs=runs, model=trained["model"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    small, large = [int(line.split()[-1]) for line in done.stdout.splitlines()
                    if line.startswith("peak KiB")]
    all_at_once_kib = (sizes[1] - sizes[0]) * 64 * 64 * 3 * 4 / 1024  # the extra images
    assert large - small < 0.5 * all_at_once_kib


def test_training_with_no_readable_image_of_a_class_is_exit_2(tmp_path, capsys):
    make_image_folder(str(tmp_path), per_class=3)
    for name in os.listdir(tmp_path / "male"):
        (tmp_path / "male" / name).write_bytes(b"broken")
    assert train_model.main(["--data_path", str(tmp_path), "--weights", "none"]) == 2
    assert "no readable male training image" in capsys.readouterr().err
