"""What train_model.py refuses before it works, and what it does with a checkpoint folder that
is damaged, half-written, contradicted or in use (issue 29). Each case asserts the one-line
error and that nothing the user had changed."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from facegender.cli import train as train_model
from facegender.training.callbacks import CheckpointFolder
from conftest import IMAGE_SIZE, ROOT, TINY_TRAINING, tree_hashes


def user_files(root):
    """tree_hashes without the run's own lock file (`.lock`, which holds nothing of theirs)."""
    return {k: v for k, v in tree_hashes(root).items() if os.path.basename(k) != ".lock"}


def refused(capsys, argv):
    """Run train_model.py with argv; return its one line of error (exit code 2)."""
    with pytest.raises(SystemExit) as stop:
        code = train_model.main(argv)
        raise SystemExit(code)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and not any("Traceback" in line for line in err)
    return err[-1]


# ---------------------------------------------------------------------------
# --output, checked before any image is read

def test_output_that_is_not_a_model_file_is_refused_at_once(tmp_path, capsys):
    line = refused(capsys, ["--data_path", str(tmp_path / "nowhere"),
                            "--output", str(tmp_path / "model.txt")])
    assert "--output" in line and "model.txt" in line and ".h5 or .keras" in line
    assert not os.path.exists(tmp_path / "model.txt")


def test_output_over_the_init_model_or_its_sidecar_is_refused(trained, tmp_path, capsys):
    before = tree_hashes(trained["dir"])
    line = refused(capsys, TINY_TRAINING + ["--data_path", trained["data"],
                                            "--init_model", trained["model"],
                                            "--output", trained["model"]])
    assert "an input of this run" in line and trained["model"] in line
    assert tree_hashes(trained["dir"]) == before


def test_output_inside_a_data_folder_is_refused_unless_allowed(image_folder, tmp_path, capsys):
    before = tree_hashes(image_folder)
    inside = os.path.join(image_folder, "male", "model.h5")
    line = refused(capsys, ["--data_path", image_folder, "--output", inside])
    assert "inside the data folder" in line and "--allow_output_in_data" in line
    assert tree_hashes(image_folder) == before
    # Said on purpose, it passes the check (the parser returns).
    args = train_model.parse_args(["--data_path", image_folder, "--output", inside,
                                   "--allow_output_in_data"])
    assert args.allow_output_in_data
    shutil.rmtree(os.path.splitext(inside)[0] + "_checkpoints")  # made by the writability check
    assert tree_hashes(image_folder) == before


def test_checkpoints_inside_a_data_folder_are_refused(image_folder, tmp_path, capsys):
    line = refused(capsys, ["--data_path", image_folder, "--output", str(tmp_path / "m.h5"),
                            "--checkpoint_dir", os.path.join(image_folder, "ckpt")])
    assert "error: --checkpoint_dir" in line and "inside the data folder" in line


def test_output_that_cannot_be_written_fails_in_the_first_second(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = refused(capsys, ["--data_path", str(tmp_path / "nowhere"),
                            "--output", str(blocker / "model.h5")])
    # It names the user's path, not a temporary file.
    assert "--output" in line and str(blocker) in line and "cannot be written" in line
    assert ".partial" not in line


# ---------------------------------------------------------------------------
# Checkpoints

@pytest.mark.parametrize("existing", ["model", "sidecar"])
def test_the_default_output_over_an_existing_model_is_refused_before_any_image_is_read(
        trained, tmp_path, capsys, monkeypatch, existing):
    # In a clone, `--output`'s default is the shipped model's own name: the seed's command
    # run in the repository root must not replace it (nor its sidecar alone).
    here = tmp_path / "clone"
    here.mkdir()
    kept = {"model": "model_balanced.h5", "sidecar": "model_balanced.json"}[existing]
    shutil.copy(os.path.splitext(trained["model"])[0] + os.path.splitext(kept)[1], here / kept)
    monkeypatch.chdir(here)
    before = tree_hashes(str(here))
    # A data folder that does not exist: refused before it is looked at.
    line = refused(capsys, ["--data_path", str(tmp_path / "my_faces"), "--weights", "none"])
    assert line.count("\n") == 0 and "--output model_balanced.h5" in line
    assert kept in line and "--overwrite" in line
    assert tree_hashes(str(here)) == before
    args = train_model.parse_args(["--data_path", str(tmp_path / "my_faces"), "--weights",
                                   "none", "--overwrite"])
    assert args.overwrite and args.output == "model_balanced.h5"


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the fixture's finished one-epoch run, to resume or to damage."""
    out = tmp_path / "run"
    shutil.copytree(trained["dir"], out)
    return out


def resume(trained, out, *flags, epochs=2):
    """The fixture's command (its flags), resumed for `epochs` in all."""
    return TINY_TRAINING + ["--data_path", trained["data"], "--weights", trained["weights"],
                            "--trainable_layers", "0", "--epochs", str(epochs), "--resume",
                            "--output", str(out / "model_balanced.h5"), "--overwrite", *flags]


@pytest.mark.parametrize("damage, named", [
    ("truncate last.keras", "last.keras"),
    ("empty state.json", "state.json"),
    ("truncate best.weights.h5", "best.weights.h5"),
])
def test_a_damaged_checkpoint_is_named_with_what_to_do(trained, run_copy, capsys, damage,
                                                       named):
    folder = run_copy / "model_balanced_checkpoints"
    target = folder / named
    if damage.startswith("truncate"):
        blob = target.read_bytes()
        target.write_bytes(blob[:len(blob) // 2])
    else:
        target.write_text("")
    before = user_files(str(run_copy))
    line = refused(capsys, resume(trained, run_copy))
    assert str(target) in line and "damaged" in line
    assert "start over without --resume" in line
    assert user_files(str(run_copy)) == before  # nothing written over, nothing deleted


def test_a_resume_that_contradicts_the_checkpoint_names_the_flag(trained, run_copy, capsys):
    before = user_files(str(run_copy))
    other = str(IMAGE_SIZE + 32)
    line = refused(capsys, resume(trained, run_copy, "--image_size", other))
    assert f"--image_size {other} contradicts the checkpoint" in line
    assert f"made with --image_size {IMAGE_SIZE}" in line
    line = refused(capsys, resume(trained, run_copy, "--dropout", "0.5"))
    assert "--dropout 0.5 contradicts" in line
    assert user_files(str(run_copy)) == before


def test_a_checkpoint_of_before_kept_flags_is_still_checked_for_its_input_size(
        trained, run_copy, capsys):
    import json
    state_file = run_copy / "model_balanced_checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    del state["flags"]
    state_file.write_text(json.dumps(state))
    other = str(IMAGE_SIZE + 32)
    line = refused(capsys, resume(trained, run_copy, "--image_size", other))
    assert f"--image_size {other} contradicts" in line


def test_leftovers_of_an_interrupted_save_are_removed_at_the_next_start(trained, run_copy,
                                                                        capsys):
    folder = run_copy / "model_balanced_checkpoints"
    leftovers = [folder / ".partial-x1y2.last.keras", run_copy / ".partial-z3.model_balanced.h5"]
    for path in leftovers:
        path.write_bytes(b"half a save")
    mine = run_copy / ".partial-notes.txt"  # not one of the run's outputs: left alone
    mine.write_text("keep")
    # --epochs 1: the run has nothing left to train, so it only tunes and saves.
    code = train_model.main(resume(trained, run_copy, epochs=1))
    assert code == 0
    assert "removed 2 file(s) left by an interrupted save" in capsys.readouterr().out
    assert not any(path.exists() for path in leftovers) and mine.exists()


def test_a_second_run_on_a_held_checkpoint_folder_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "held"
    holder = CheckpointFolder(str(out / "model_balanced_checkpoints"))
    try:
        line = refused(capsys, TINY_TRAINING + ["--data_path", trained["data"],
                                                "--output", str(out / "model_balanced.h5")])
        assert "in use by another training run" in line and f"pid {os.getpid()}" in line
    finally:
        holder.release()


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    folder = tmp_path / "ckpt"
    code = ("import sys, time; "
            "from facegender.training.callbacks import CheckpointFolder; "
            "held = CheckpointFolder(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="in use by another training run"):
            CheckpointFolder(str(folder))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    CheckpointFolder(str(folder)).release()  # the kernel dropped the dead run's lock
