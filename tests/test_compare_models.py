"""bench/compare_models.py's rule from stage 14 (issue 37): FACECOM judged by ROC AUC and
balanced accuracy, the other sources by macro-F1, the worst age band by its recall."""

import importlib.util
import json
import os

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "compare_models", os.path.join(ROOT, "bench", "compare_models.py"))
compare_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_models)


def evaluation(facecom_auc=0.97, facecom_female=(60, 69), women_60=(48, 60), scut_f1=0.95,
               faceless=()):
    """A metrics.json as test_script.py writes it, with the fields the rules read."""
    def row(group, f1, female, male, auc):
        return {"group": group, "macro_f1": f1, "female": list(female), "male": list(male),
                "roc_auc": auc}
    rows = [row("facecom/dev", 0.90, facecom_female, (170, 186), facecom_auc),
            row("facecom_distorted/dev", 0.88, (400, 483), (1200, 1302), 0.95),
            row("sunny", 0.85, (50, 69), (170, 186), 0.91),
            row("celeba/dev", 0.97, (2700, 2811), (2700, 2786), 0.99),
            row("utkface/dev", 0.93, (800, 864), (1000, 1049), 0.98),
            row("scut/dev", scut_f1, (170, 182), (205, 215), 0.99),
            row("aaf/dev", 0.91, (350, 389), (320, 350), 0.96)]
    bands = [{"group": band, "female": [18, 20], "male": [19, 20]}
             for band in ("20s", "30s", "40s", "50s")]
    bands.append({"group": "60+", "female": list(women_60), "male": [58, 60]})
    return {"model_threshold": {"threshold": 0.5}, "sources": {"rows": rows},
            "factors": {"tables": [{"attribute": "age", "source": s, "rows": bands}
                                   for s in ("aaf/dev", "utkface/dev")]},
            "images_without_a_face": list(faceless)}


def verdict(tmp_path, old, new, capsys):
    files = []
    for name, metrics in (("old", old), ("new", new)):
        files.append(str(tmp_path / f"{name}.json"))
        with open(files[-1], "w") as f:
            json.dump(metrics, f)
    code = compare_models.main(*files)
    return code, capsys.readouterr().out


def test_the_rule_passes_a_model_that_ranks_facecom_better_at_a_lower_macro_f1(tmp_path, capsys):
    old = evaluation(women_60=(19, 60))
    new = evaluation(facecom_auc=0.98, women_60=(48, 60),
                     faceless=["v/sunny/male/1_sunny.jpg", "d/male/1_sunny.jpg"])
    new["sources"]["rows"][0]["macro_f1"] = 0.88  # macro-F1 lower, ranking better
    code, out = verdict(tmp_path, old, new, capsys)
    assert code == 0 and "rule from stage 14: PASSES" in out
    assert "worst (band, class) recall 0.800" in out
    # The glare photo without a face is counted once, though it is in two folders.
    assert any(line.split()[0] == "sunny" and line.split()[-1] == "1"
               for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("change, line", [
    ({"women_60": (47, 60)}, "1. worst (band, class) recall 0.783"),
    ({"facecom_auc": 0.96}, "3. facecom/dev ROC AUC 0.9600 >= 0.9700: NO"),
    ({"facecom_female": (58, 69)}, "3. facecom/dev balanced accuracy"),
    ({"scut_f1": 0.94}, "2. scut/dev macro-F1 0.9400 >= 0.9500 - 0.005: NO"),
])
def test_each_line_of_the_rule_can_fail_it(tmp_path, capsys, change, line):
    code, out = verdict(tmp_path, evaluation(), evaluation(**change), capsys)
    assert code == 1 and "rule from stage 14: FAILS" in out
    assert any(l.strip().startswith(line) and l.strip().endswith("NO") for l in out.splitlines())
