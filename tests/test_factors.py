"""Factors: metrics per value of an image attribute (age band, origin) from attributes.csv."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from facegender.data import attributes
from facegender.evaluation import metrics
from facegender.cli import evaluate as test_script
from facegender.evaluation import evaluate
from facegender.drawing import plots
from conftest import make_image_folder


def run(args):
    return test_script.main(args + ["--verbose", "0"])


def write_attributes(folder, header, rows):
    with open(os.path.join(folder, "attributes.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)


# ---------------------------------------------------------------------------
# Pure functions

def test_ages_are_binned_by_decade_with_60_and_up_in_one_band(tmp_path):
    folder = make_image_folder(str(tmp_path / "d"), per_class=1)
    write_attributes(folder, ["path", "Age", "origin"],
                     [["female/a.jpg", "9", "x"], ["female/b.jpg", "15", ""],
                      ["female/c.jpg", "29.5", "y"], ["female/d.jpg", "59.9", "x"],
                      ["male/e.jpg", "60", "x"], ["male/f.jpg", "116", "x"],
                      ["male/g.jpg", "", "x"]])
    table, columns = attributes.read_attributes(folder)
    assert columns == ["Age", "origin"]
    ages = [table[os.path.join(folder, p)]["Age"] for p in
            ("female/a.jpg", "female/b.jpg", "female/c.jpg", "female/d.jpg", "male/e.jpg",
             "male/f.jpg", "male/g.jpg")]
    assert ages == ["<10", "10s", "20s", "50s", "60+", "60+", "unknown"]
    assert table[os.path.join(folder, "female/b.jpg")]["origin"] == "unknown"
    mixed = ["60+", "unknown", "asian", "<10", "20s", "10s"]
    assert sorted(mixed, key=attributes.band_order) == ["<10", "10s", "20s", "60+", "asian",
                                                         "unknown"]


def test_wilson_interval_matches_the_hand_computed_one():
    # 8/10 at z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71675, half-width
    # 1.96 / 1.38415 * sqrt(0.016 + 0.009604) = 0.22658, so (0.4902, 0.9433).
    low, high = metrics.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # At 0/n the interval starts at 0 but is not a point: z^2/n / (1 + z^2/n) = 0.2775.
    assert metrics.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert metrics.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(np.isnan(metrics.wilson_interval(0, 0)))
    # Exactly, not a rounding hair inside: 0/n at 149, 153 and 104 ended at 1.7e-18 and n/n
    # at 0.9999999999999999, and the recall-by-age plot's error bars then went negative.
    for n in (40, 104, 149, 153, 1000):
        assert metrics.wilson_interval(0, n)[0] == 0.0 and metrics.wilson_interval(n, n)[1] == 1.0


def test_macro_f1_from_counts_agrees_with_scikit_learn():
    rng = np.random.default_rng(3)
    for n in (1, 5, 40):
        y, pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
        confusion = [[np.sum((y == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)]
        expected = f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0)
        assert metrics.macro_f1_from_counts(confusion) == pytest.approx(expected)


def test_bootstrap_interval_agrees_with_resampling_the_images():
    confusion = [[30, 10], [5, 55]]
    low, high = metrics.bootstrap_macro_f1_interval(confusion, seed=1)
    assert metrics.bootstrap_macro_f1_interval(confusion, seed=1) == (low, high)  # seeded
    point = metrics.macro_f1_from_counts(confusion)
    assert low < point < high
    # The same bootstrap done the direct way: resample the 100 images themselves and count.
    cells = np.repeat([0, 1, 2, 3], [30, 10, 5, 55])  # 2 * true + predicted, row by row
    resampled = cells[np.random.default_rng(2).integers(0, 100, (2000, 100))]
    counts = (resampled[..., None] == np.arange(4)).sum(axis=1).reshape(-1, 2, 2)
    direct = np.quantile(metrics.macro_f1_from_counts(counts), [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(direct), abs=0.02)
    # Four times the images, same shares: a narrower interval.
    big_low, big_high = metrics.bootstrap_macro_f1_interval(np.multiply(confusion, 4))
    assert big_high - big_low < 0.7 * (high - low)
    assert metrics.bootstrap_macro_f1_interval([[5, 0], [0, 7]]) == (1.0, 1.0)


def test_factor_table_counts_and_intervals_per_value_with_unknown_last():
    groups = ["20s", "20s", "20s", "unknown", "60+", "60+", "60+", "20s"]
    y = np.array([0, 0, 1, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.9, 0.8, 0.95, 0.3])
    rows = metrics.factor_table(groups, y, scores, 0.5, order=attributes.band_order)
    assert [r["group"] for r in rows] == ["20s", "60+", "unknown"]
    twenties, sixties, unknown = rows
    assert twenties["female"] == [1, 2] and twenties["male"] == [1, 2]
    assert twenties["female_recall_interval"] == pytest.approx(metrics.wilson_interval(1, 2))
    assert sixties["female"] == [0, 2] and sixties["female_recall"] == 0.0
    assert sixties["female_recall_interval"][0] == 0.0 < sixties["female_recall_interval"][1]
    assert unknown["images"] == 1 and unknown["male"] == [0, 0]
    assert unknown["male_recall"] is None and unknown["male_recall_interval"] is None
    for r in rows:  # the point estimate is group_table's, inside its interval
        low, high = r["macro_f1_interval"]
        assert low <= r["macro_f1"] <= high


# ---------------------------------------------------------------------------
# test_script.py

def folder_with_attributes(root, seed, header, values):
    """A 4-a-class image folder whose attributes.csv has a row for the images in `values`
    ({relative path: [cells]}); the others have none."""
    folder = make_image_folder(root, per_class=4, seed=seed)
    write_attributes(folder, header, [[p, *cells] for p, cells in values.items()])
    return folder


def test_evaluation_reports_factors_per_source_with_intervals_and_a_picture(
        trained, tmp_path, capsys):
    first = folder_with_attributes(str(tmp_path / "first"), 11, ["path", "age", "origin"], {
        "female/img_00_a.jpg": ["23", "asian"], "female/img_01_b.jpg": ["27", "white"],
        "female/img_02_a.jpg": ["64", "asian"], "male/img_00_a.png": ["31", "white"],
        "male/img_01_b.png": ["88", "asian"], "male/img_02_a.png": ["", "asian"],
        "male/not_here.png": ["40", "white"]})  # no such image: counted, not an error
    second = folder_with_attributes(str(tmp_path / "second"), 12, ["path", "age"], {
        "female/img_00_a.jpg": ["45"], "male/img_00_a.png": ["45"], "male/img_01_b.png": ["52"]})
    out = tmp_path / "eval"
    assert run(["--data_path", first, second, "--model_path", trained["model"],
                "--output_dir", str(out), "--no_copy"]) == 0
    printed = capsys.readouterr().out

    results = json.load(open(out / "metrics.json"))
    factors = results["factors"]
    assert factors["threshold"] == results["model_threshold"]["threshold"]
    tables = {(t["source"], t["attribute"]): t for t in factors["tables"]}
    assert sorted(tables) == [("first", "age"), ("first", "origin"), ("second", "age")]
    age = {r["group"]: r for r in tables["first", "age"]["rows"]}
    assert list(age) == ["20s", "30s", "60+", "unknown"]
    assert [age[b]["female"][1] for b in age] == [2, 0, 1, 1]
    assert [age[b]["male"][1] for b in age] == [0, 1, 1, 2]  # an empty age is unknown too
    assert tables["first", "age"]["rows_without_image"] == 1
    origin = {r["group"]: r["images"] for r in tables["first", "origin"]["rows"]}
    assert origin == {"asian": 4, "white": 2, "unknown": 2}
    assert [(r["group"], r["images"]) for r in tables["second", "age"]["rows"]] == [
        ("40s", 2), ("50s", 1), ("unknown", 5)]

    # Each cell counts its own images at the model's threshold, as evaluation.csv has them.
    with open(out / "evaluation.csv") as f:
        correct = {os.path.relpath(r["path"], first): r["correct"] == "1"
                   for r in csv.DictReader(f) if r["path"].startswith(first + os.sep)}
    twenties = ["female/img_00_a.jpg", "female/img_01_b.jpg"]
    assert age["20s"]["female"][0] == sum(correct[p] for p in twenties)
    ok, n = age["60+"]["male"]
    assert age["60+"]["male_recall_interval"] == pytest.approx(metrics.wilson_interval(ok, n))

    assert "Wilson" in printed and "bootstrap" in printed
    assert "by age (first)" in printed and "by origin (first)" in printed
    assert "by age (second)" in printed
    unknown_line = next(line for line in printed.splitlines() if line.startswith("unknown"))
    assert unknown_line.split()[1] == "3"  # images without an age in `first`
    assert "1 row(s) of" in printed and "recall_by_age.png" in printed
    with Image.open(out / "recall_by_age.png") as img:  # one panel per source with an age
        assert img.size[0] > 1.8 * img.size[1]


def test_folders_without_attributes_get_no_factor_report(trained, tmp_path, capsys):
    folder = make_image_folder(str(tmp_path / "plain"), per_class=2, seed=13)
    out = tmp_path / "eval"
    assert run(["--data_path", folder, "--model_path", trained["model"],
                "--output_dir", str(out), "--no_copy"]) == 0
    assert "factors" not in json.load(open(out / "metrics.json"))
    assert "factors" not in capsys.readouterr().out
    assert not (out / "recall_by_age.png").exists()


@pytest.mark.parametrize("rows, row_number, says", [
    ([["female/img_00_a.jpg", "31"], ["male/img_00_a.png", "forty"]], 3, "age 'forty'"),
    ([["female/img_00_a.jpg", "31", "extra"]], 2, "3 cells"),
    ([["../elsewhere.jpg", "31"]], 2, "not a file inside"),
])
def test_malformed_attributes_exit_2_with_one_line_and_nothing_written(
        trained, tmp_path, capsys, monkeypatch, rows, row_number, says):
    folder = make_image_folder(str(tmp_path / "d"), per_class=1, seed=14)
    write_attributes(folder, ["path", "age"], rows)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the attributes were checked")

    monkeypatch.setattr(evaluate.inference, "load_runner", never)
    out = tmp_path / "eval"
    assert run(["--data_path", folder, "--model_path", trained["model"],
                "--output_dir", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0
    assert os.path.join(folder, "attributes.csv") in err and f"row {row_number}" in err
    assert says in err
    assert not out.exists()  # no metrics.json, no misclassified/, not even the folder


def test_recall_by_age_leaves_unknown_off_the_axis_and_skips_empty_cells(tmp_path):
    rows = metrics.factor_table(["20s", "20s", "60+", "unknown", "unknown"],
                                np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.1, 0.9]),
                                0.5, order=attributes.band_order)
    fig = plots.recall_by_age_figure([("Recall by age band, set", rows)])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["20s\n2", "60+\n1"]
    assert "2 without an age" in ax.get_title()
    female, male = (bars.lines[0].get_ydata() for bars in ax.containers)  # one per class
    assert female[0] == 1.0 and np.isnan(female[1])  # no woman in 60+: no point
    assert list(male) == [1.0, 0.0]
    plots.save(fig, str(tmp_path / "age.png"))
    with Image.open(tmp_path / "age.png") as img:
        assert img.size == (605, 440)
