import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from facegender.cli import evaluate as test_script
from facegender.evaluation import evaluate, metrics, summary
from facegender.evaluation.config import EvalConfig
from conftest import make_image_folder, tree_hashes


def run(args):
    return test_script.main(args + ["--verbose", "0"])


@pytest.fixture
def data_with_a_twin(trained, tmp_path):
    """A copy of the trained model's data with one image filed under both classes: it gets the
    same score (to float noise; bfloat16's depends on the batch) under each, so one of the two
    is a mistake at any threshold, and there is always something to copy out."""
    folder = tmp_path / "data"
    shutil.copytree(trained["data"], folder)
    shutil.copyfile(folder / "female" / "img_00_a.jpg", folder / "male" / "twin.jpg")
    return folder


def test_evaluation_writes_every_output_and_leaves_inputs_untouched(trained, tmp_path,
                                                                    data_with_a_twin):
    folder = data_with_a_twin
    before = tree_hashes(str(folder))
    out = tmp_path / "eval"
    assert run(["--data_path", str(folder), "--model_path", trained["model"],
                "--output_dir", str(out), "--precision", "f32"]) == 0
    assert tree_hashes(str(folder)) == before

    with Image.open(out / "confusion_matrix.png") as img:
        assert img.size[0] > 200
    with open(out / "metrics.json") as f:
        results = json.load(f)
    assert results["images"] == 25
    sidecar_t = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))["threshold"]
    assert results["model_threshold"]["threshold"] == sidecar_t
    assert results["model_threshold"]["source"] == "the model's sidecar"
    assert len(results["sweep"]) == 99
    best = max(s["macro_f1"] for s in results["sweep"])
    assert results["best_threshold"]["macro_f1"] == pytest.approx(best)
    with open(out / "evaluation.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25 and {r["true"] for r in rows} == {"female", "male"}
    wrong = [r for r in rows if r["correct"] == "0"]
    twins = [r for r in rows if r["path"].endswith(("img_00_a.jpg", "twin.jpg"))]
    assert len(twins) == 2
    assert float(twins[0]["p_male"]) == pytest.approx(float(twins[1]["p_male"]), abs=1e-4)
    assert sum(r in wrong for r in twins) == 1
    # Each mistake, and nothing else, is copied into <true>_as_<predicted>/ under its own name.
    expected = sorted((f"{r['true']}_as_{r['predicted']}",
                       os.path.splitext(os.path.basename(r["path"]))[0]) for r in wrong)
    copied = sorted((d, name.rsplit("_p", 1)[0]) for d in ("female_as_male", "male_as_female")
                    if (out / "misclassified" / d).exists()
                    for name in os.listdir(out / "misclassified" / d))
    assert copied == expected


def test_copies_never_overwrite_same_named_files(tmp_path):
    # Two folders holding face.jpg, copied twice into the same output (several sources can
    # hold same-named files; test_evaluation_writes_every_output_and_leaves_inputs_untouched
    # checks, end to end, that the mistakes and only they are copied).
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "face.jpg").write_bytes(sub.encode())
    out = str(tmp_path / "out")
    dests = [evaluate.copy_misclassified(str(tmp_path / sub / "face.jpg"), "female", "male",
                                         0.8123, out) for _ in range(2) for sub in ("a", "b")]
    assert [os.path.basename(d) for d in dests] == [
        "face_p0.812.jpg", "face_p0.812_1.jpg", "face_p0.812_2.jpg", "face_p0.812_3.jpg"]
    assert [open(d, "rb").read() for d in dests] == [b"a", b"b", b"a", b"b"]
    assert sorted(os.listdir(os.path.join(out, "female_as_male"))) == sorted(
        os.path.basename(d) for d in dests)
    assert (tmp_path / "a" / "face.jpg").exists()  # copied, not moved


def test_a_second_run_replaces_its_copies_and_leaves_predict_s_csv_and_the_user_s_files(
        trained, tmp_path, capsys, data_with_a_twin):
    from facegender.cli import predict
    folder = data_with_a_twin
    out = tmp_path / "work"
    # predict.py's CSV and summary in the folder the evaluation writes to.
    assert predict.main([str(folder), "--model_path", trained["model"], "--output",
                         str(out / "predictions.csv"), "--verbose", "0"]) == 0
    theirs = out / "misclassified" / "female_as_male" / "kept.jpg"  # the user's own file
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"mine")
    before = tree_hashes(str(out))

    def copies():
        return sorted(os.path.relpath(os.path.join(d, f), out / "misclassified")
                      for d, _, files in os.walk(out / "misclassified") for f in files
                      if not f.startswith("."))

    assert run(["--data_path", str(folder), "--model_path", trained["model"],
                "--output_dir", str(out)]) == 0
    first = copies()
    assert len(first) > 2  # the mistakes, the contact sheet and the user's file
    assert run(["--data_path", str(folder), "--model_path", trained["model"],
                "--output_dir", str(out), "--threshold", "0.5"]) == 0
    assert "replacing the earlier run's" in capsys.readouterr().out
    second = copies()
    assert not [name for name in second if "_1." in name]  # no pile of `_1` copies
    with open(out / "evaluation.csv") as f:
        wrong = [r for r in csv.DictReader(f) if r["correct"] == "0"]
    assert len(second) == len(wrong) + 2  # this run's mistakes, its sheet, the user's file
    # predict.py's outputs and the user's file are as they were.
    for name in ("predictions.csv", "predictions.summary.json",
                 os.path.join("misclassified", "female_as_male", "kept.jpg")):
        assert tree_hashes(str(out))[name] == before[name]


def test_group_by_suffix_reports_each_group(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run(["--data_path", trained["data"], "--model_path", trained["model"],
                "--output_dir", str(out), "--group_by", "suffix", "--no_copy"]) == 0
    groups = json.load(open(out / "metrics.json"))["groups"]
    assert groups["by"] == "suffix"
    assert {r["group"]: r["images"] for r in groups["rows"]} == {"a": 12, "b": 12}
    assert "by suffix" in capsys.readouterr().out
    assert not (out / "misclassified").exists()


def test_bad_arguments_exit_2_with_one_line(trained, tmp_path, capsys):
    assert run(["--data_path", str(tmp_path / "nope"), "--model_path", trained["model"]]) == 2
    assert "no such folder" in capsys.readouterr().err
    folder = make_image_folder(str(tmp_path / "d"), per_class=2)
    assert run(["--data_path", folder, "--model_path", str(tmp_path / "none.h5")]) == 2
    assert "model file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert run(["--data_path", folder, "--model_path", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a loadable Keras model" in err and err.count("\n") == 0


def test_several_folders_are_reported_per_source_and_pooled(trained, tmp_path, capsys):
    make_image_folder(str(tmp_path / "sets" / "first" / "dev"), per_class=3, seed=5)
    make_image_folder(str(tmp_path / "sets" / "first" / "train"), per_class=3, seed=6)
    make_image_folder(str(tmp_path / "sets" / "second"), per_class=2, seed=7)
    out = tmp_path / "eval"
    # A folder of sources, and the same sources named one by one, give the same table.
    for data_paths in ([str(tmp_path / "sets")],
                       [str(tmp_path / "sets" / "first" / "dev"),
                        str(tmp_path / "sets" / "second")]):
        assert run(["--data_path", *data_paths, "--model_path", trained["model"],
                    "--output_dir", str(out), "--no_copy"]) == 0
        results = json.load(open(out / "metrics.json"))
        assert results["images"] == 10
        rows = results["sources"]["rows"]
        assert [r["images"] for r in rows] == [6, 4]
        assert [r["female"][1] for r in rows] == [3, 2]
        assert "first" in rows[0]["group"] and "second" in rows[1]["group"]
        with open(out / "evaluation.csv") as f:
            predicted = {r["path"]: r["predicted"] for r in csv.DictReader(f)}
        for r in rows:  # each row counts its own images at the model's threshold
            mine = [p for p in predicted if r["group"].split("/")[0] in p]
            correct = sum(predicted[p] == ("female" if "female" in p else "male") for p in mine)
            assert correct == r["female"][0] + r["male"][0]
    assert "by source" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# The library returns, the script prints

def test_evaluate_returns_the_numbers_and_prints_nothing_and_the_script_prints_them(
        trained, tmp_path, capsys, data_with_a_twin):
    folder = data_with_a_twin
    out = tmp_path / "library"
    config = EvalConfig(data_path=[str(folder)], model_path=trained["model"],
                        output_dir=str(out), group_by="suffix", precision="f32", verbose=0)
    capsys.readouterr()
    found = evaluate.evaluate(config)  # as a program that imports the package calls it
    assert capsys.readouterr().out == ""

    written = json.load(open(out / "metrics.json"))
    assert found.metrics["images"] == found.images == written["images"] == 25
    for key in ("confusion_matrix", "macro_f1", "threshold", "source"):
        assert found.model_threshold[key] == written["model_threshold"][key]
    assert found.best_threshold["threshold"] == written["best_threshold"]["threshold"]
    assert json.loads(json.dumps(found.groups)) == written["groups"] and found.sources is None
    with open(out / "evaluation.csv") as f:
        wrong = [r for r in csv.DictReader(f) if r["correct"] == "0"]
    assert found.misclassified == len(wrong) >= 1
    assert len(found.copies) == len(wrong) and all(os.path.isfile(p) for p in found.copies)
    assert os.path.isfile(found.contact_sheet["path"])
    assert found.output_dir == str(out)
    assert all((out / name).is_file() for name in found.written)
    assert {"metrics.json", "evaluation.csv", "confusion_matrix.png"} <= set(found.written)
    assert found.unreadable == {} and found.error_rates is None and found.report_page is None

    # The script prints the same numbers, after the line that says what is being evaluated.
    assert run(["--data_path", str(folder), "--model_path", trained["model"], "--output_dir",
                str(tmp_path / "script"), "--group_by", "suffix", "--precision", "f32"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("evaluating 25 images (12 female, 13 male)")
    assert summary.tables_text(found) in printed
    assert f"\n{found.misclassified} misclassified at threshold" in printed


def test_store_error_rates_on_one_class_is_refused_before_anything_is_written(
        trained, tmp_path, capsys):
    model = tmp_path / "model" / os.path.basename(trained["model"])
    model.parent.mkdir()
    for ext in (".h5", ".json"):
        shutil.copy(os.path.splitext(trained["model"])[0] + ext, model.parent)
    before = tree_hashes(str(model.parent))
    folder = tmp_path / "women"
    shutil.copytree(os.path.join(trained["data"], "female"), folder / "female")
    out = tmp_path / "eval"
    assert run(["--data_path", str(folder), "--model_path", str(model), "--output_dir",
                str(out), "--store_error_rates"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --store_error_rates: no male images in {folder}; the rates need "
                   "both classes")
    assert tree_hashes(str(model.parent)) == before  # the sidecar as it was
    assert os.listdir(out) == []  # no metrics.json, no copies: nothing half done


def small_evaluation(**changes):
    """An Evaluation of ten scores, with no model: what summary reads."""
    labels, scores = np.array([0] * 5 + [1] * 5), np.linspace(0.05, 0.95, 10)
    at_model = {**metrics.evaluation_report(labels, scores, 0.5), "source": "--threshold"}
    fields = dict(
        metrics={}, model_threshold=at_model,
        best_threshold=metrics.evaluation_report(labels, scores, 0.3),
        sources={"threshold": 0.5, "rows": metrics.group_table(
            ["a"] * 4 + ["b"] * 6, labels, scores, 0.5)},
        groups=None, factors=None, images=10, unreadable={}, face_geometry=None, no_face=[],
        misclassified=0, copies_dir=None, copies=(), replaced=0, contact_sheet=None,
        output_dir=os.path.join(os.sep, "out"), written=("confusion_matrix.png", "metrics.json"),
        report_page=None, error_rates=None, error_rates_path=None)
    return evaluate.Evaluation(**{**fields, **changes})


def test_summary_is_the_text_of_the_result_alone():
    text = summary.summary(small_evaluation())
    lines = text.splitlines()
    assert lines[:2] == ["", "== At the model's threshold (--threshold): threshold 0.50, "
                             "macro-F1 1.0000"]
    assert "worst source: a (macro-F1 0.5000)" in lines  # one class: half of macro-F1
    assert lines[-2:] == ["0 misclassified at threshold 0.50",
                          f"wrote confusion_matrix.png, metrics.json in {os.sep}out"]
    assert "no face found" not in text and "skipped" not in text  # images as given

    faceless = [f"img{i}.jpg" for i in range(12)]
    text = summary.summary(small_evaluation(
        images=20, face_geometry={"kind": "aligned"}, no_face=faceless, unreadable={"bad.jpg": "why"},
        error_rates={"threshold": 0.5, "confusion_matrix": [[5, 0], [0, 5]]},
        error_rates_path="m.json", copies_dir="misclassified", replaced=3))
    lines = text.splitlines()
    assert ("0 misclassified at threshold 0.50, copied into misclassified (replacing the "
            "earlier run's 3 file(s) there)") in lines
    start = lines.index("skipped 1 unreadable image(s):")
    assert lines[start:start + 4] == [
        "skipped 1 unreadable image(s):", "  bad.jpg: why",
        "no face found in 12 of 20 images, scored as given (all listed in metrics.json, "
        "images_without_a_face)", "  img0.jpg"]
    assert lines[start + 13] == "  ... and 2 more"  # the first NO_FACE_SHOWN named
    assert lines[-1] == ("stored the confusion counts at threshold 0.50 ([[5, 0], [0, 5]]) in "
                         "m.json (error_rates)")
