"""predict.py's audit (audit.py): which error rates correct the share of women, the refusals,
the table per sub-folder; the sidecar's error_rates, checked, and written by test_script.py."""

import json
import os
import shutil

import numpy as np
import pytest

from facegender.labelling import audit
from facegender.model.sidecar import check_sidecar, sidecar_path
from facegender.cli import predict
from facegender.cli import evaluate as test_script
from facegender.core.common import ModelError


def copy_model(trained, folder):
    """The tiny model and its sidecar in `folder`, to change the sidecar freely."""
    os.makedirs(folder, exist_ok=True)
    for ext in (".h5", ".json"):
        shutil.copy(os.path.splitext(trained["model"])[0] + ext, folder)
    return os.path.join(folder, os.path.basename(trained["model"]))


def edit_sidecar(model_path, **changes):
    path = sidecar_path(model_path)
    sidecar = json.load(open(path))
    for key, value in changes.items():
        if value is None:
            sidecar.pop(key, None)
        else:
            sidecar[key] = value
    json.dump(sidecar, open(path, "w"))
    return sidecar


def scores_of(trained, tmp_path):
    """{path: P(male)} of the tiny model on its image folder in float32 (as `run` scores), and
    a threshold that splits them in half (so both calls occur)."""
    out = tmp_path / "scores.csv"
    assert predict.main([trained["data"], "--model_path", trained["model"], "--output", str(out),
                         "--verbose", "0", "--precision", "f32"]) == 0
    scores = {r["path"]: float(r["p_male"]) for r in audit.read_rows(str(out))}
    return scores, float(np.median(list(scores.values())))


def make_sample(root, scores, threshold, confusion):
    """A labelled sample whose counts at `threshold` are `confusion` by construction: images the
    model calls female or male are copied into female/ or male/ as many times as asked."""
    called = {0: [p for p, s in scores.items() if s < threshold],
              1: [p for p, s in scores.items() if s >= threshold]}
    for true, name in enumerate(("female", "male")):
        os.makedirs(root / name, exist_ok=True)
        for call in (0, 1):
            for k in range(confusion[true][call]):
                src = called[call][k % len(called[call])]
                shutil.copy(src, root / name / f"{call}_{k}{os.path.splitext(src)[1]}")
    return str(root)


def run(paths, model, output, *extra):
    # float32: under bfloat16 (the default where the CPU has it) which scores are rechecked
    # in float32 depends on the threshold, so the scores that built a sample would move.
    return predict.main([*map(str, paths), "--model_path", model, "--output", str(output),
                         "--verbose", "0", "--precision", "f32", *extra])


def test_sidecar_rates_then_an_audit_sample_replaces_them_and_says_so(trained, tmp_path,
                                                                     capsys):
    model = copy_model(trained, tmp_path / "model")
    scores, threshold = scores_of(trained, tmp_path)
    t = f"{threshold:.6f}"
    edit_sidecar(model, error_rates={"confusion_matrix": [[90, 10], [5, 95]],
                                     "threshold": float(t), "measured_on": "made up"})
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert run([trained["data"]], model, out, "--threshold", t) == 0
    printed = capsys.readouterr().out
    summary = json.load(open(tmp_path / "pred.summary.json"))
    assert summary["rates"]["confusion_matrix"] == [[90, 10], [5, 95]]
    assert "error rates from the model's sidecar (200 labelled faces: made up)" in printed
    assert "misread as often as the labelled ones" in printed
    called = summary["counts"]["female"] / summary["faces"]
    assert summary["raw_share"] == pytest.approx(called)
    assert summary["corrected_share"] == pytest.approx(min(1, max(0, (called - .05) / .85)))
    assert summary["interval"][0] <= summary["corrected_share"] <= summary["interval"][1]

    sample = make_sample(tmp_path / "sample", scores, threshold, [[8, 2], [1, 9]])
    assert run([trained["data"]], model, out, "--threshold", t, "--audit_sample", sample) == 0
    printed = capsys.readouterr().out
    summary = json.load(open(tmp_path / "pred.summary.json"))
    assert summary["rates"]["confusion_matrix"] == [[8, 2], [1, 9]]
    assert f"error rates from --audit_sample {sample} (20 labelled faces" in printed
    assert summary["rates"]["female_recall"] == 0.8 and summary["rates"]["male_recall"] == 0.9


def test_no_usable_rates_gives_the_raw_count_and_says_why(trained, tmp_path, capsys):
    model = copy_model(trained, tmp_path / "model")
    edit_sidecar(model, error_rates=None)
    assert run([trained["data"]], model, tmp_path / "p.csv") == 0
    printed = capsys.readouterr().out
    assert "no correction: the model's sidecar holds no error rates" in printed
    summary = json.load(open(tmp_path / "p.summary.json"))
    assert summary["rates"] is None and "corrected_share" not in summary
    assert summary["counts"]["female"] + summary["counts"]["male"] == summary["faces"] == 24
    # Counts made at another threshold do not describe this run's calls.
    edit_sidecar(model, error_rates={"confusion_matrix": [[9, 1], [1, 9]], "threshold": 0.5})
    assert run([trained["data"]], model, tmp_path / "p.csv", "--threshold", "0.3") == 0
    assert "counted at threshold 0.50, this run calls at 0.30" in capsys.readouterr().out


@pytest.mark.parametrize("confusion, message", [
    ([[8, 2], [0, 0]], "no male faces among the labelled ones"),
    ([[5, 5], [5, 5]], "would divide by nearly zero"),
])
def test_an_audit_sample_that_cannot_correct_is_one_line_and_exit_2(
        trained, tmp_path, capsys, confusion, message):
    scores, threshold = scores_of(trained, tmp_path)
    sample = make_sample(tmp_path / "sample", scores, threshold, confusion)
    if not sum(confusion[1]):
        shutil.rmtree(os.path.join(sample, "male"))
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert run([trained["data"]], trained["model"], out, "--threshold", f"{threshold:.6f}",
               "--audit_sample", sample) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--audit_sample {sample}" in err and message in err
    assert not out.exists()  # refused before the collection was scored


def test_the_share_per_sub_folder(trained, tmp_path):
    archive = tmp_path / "archive"
    for year, cls in (("1990", "female"), ("2000", "male")):
        shutil.copytree(os.path.join(trained["data"], cls), archive / year)
    (archive / "1990" / "deeper").mkdir()
    shutil.copy(next((archive / "2000").iterdir()), archive / "1990" / "deeper" / "x.png")
    out = tmp_path / "p.csv"
    assert run([archive], trained["model"], out) == 0
    summary = json.load(open(tmp_path / "p.summary.json"))
    rows = {r["group"]: r for r in summary["by_folder"]}
    assert sorted(rows) == ["1990", "2000"]
    assert rows["1990"]["faces"] == 13 and rows["2000"]["faces"] == 12
    csv_rows = audit.read_rows(str(out))
    for group, r in rows.items():
        mine = [c for c in csv_rows if os.sep + group + os.sep in c["path"]]
        assert r["counts"]["female"] == sum(c["label"] == "female" for c in mine)
    assert audit.group_of(str(archive / "1990" / "a.jpg"), [str(archive), "x.jpg"]) == "1990"
    assert audit.group_of("x.jpg", [str(archive), "x.jpg"]) == "(files)"
    assert audit.group_of(str(archive / "a.jpg"), [str(archive)]) == "(top)"


def test_store_error_rates_writes_the_sidecar_and_it_is_checked(trained, tmp_path, capsys):
    model = copy_model(trained, tmp_path / "model")
    before = json.load(open(sidecar_path(model)))
    assert test_script.main(["--data_path", trained["data"], "--model_path", model,
                             "--output_dir", str(tmp_path / "eval"), "--no_copy",
                             "--verbose", "0", "--store_error_rates"]) == 0
    after = json.load(open(sidecar_path(model)))
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    record = after.pop("error_rates")
    assert record["confusion_matrix"] == metrics["model_threshold"]["confusion_matrix"]
    assert record["threshold"] == before["threshold"] and record["images"] == 24
    before.pop("error_rates")
    assert after == before  # every other key kept
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:  # argparse's p.error: one line, exit 2
        test_script.main(["--data_path", trained["data"], "--model_path", model,
                          "--store_error_rates", "--threshold", "0.3"])
    assert stopped.value.code == 2
    assert "leave out --threshold" in capsys.readouterr().err

    check = check_sidecar
    check({"error_rates": {"confusion_matrix": [[1, 2], [3, 4]], "threshold": 0.4}}, "s.json")
    for bad in ({"confusion_matrix": [[1, 2]], "threshold": 0.4},
                {"confusion_matrix": [[1, -2], [3, 4]], "threshold": 0.4},
                {"confusion_matrix": [[1, 2.5], [3, 4]], "threshold": 0.4},
                {"confusion_matrix": [[1, 2], [3, 4]], "threshold": 1.0},
                {"confusion_matrix": [[1, 2], [3, 4]]}, [1, 2]):
        with pytest.raises(ModelError, match="s.json: error_rates is"):
            check({"error_rates": bad}, "s.json")
