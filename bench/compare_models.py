"""Compare two evaluations by the shipping rule: python bench/compare_models.py OLD.json NEW.json

Each file is a `metrics.json` that test_script.py wrote for one model over the same folders
(run it with --group_by suffix on facecom_distorted/dev to get each degradation as a source).
Prints each source's macro-F1 for both and the change, each source's ROC AUC and balanced
accuracy (not part of any rule), each (age band, class) recall of every source with an age
attribute, and the verdicts of the rules in docs/training_log.md. Both ask
that the new model's worst (band, class) recall over the bands from the 20s up beats the old
one's. Stages 5 and 6 also asked that no source lose more than MAX_LOSS macro-F1. From stage 7
on, a single degradation (a source named after one, 255 images) may lose up to MAX_PART_LOSS,
and every other source, the pooled `facecom_distorted/dev` among them, up to MAX_LOSS.
"""

import json
import sys

MAX_LOSS = 0.005
MAX_PART_LOSS = 0.015
DEGRADATIONS = ("blurred", "foggy", "lowlight", "noisy", "rainy", "resized", "sunny")
RULE_BANDS = ("20s", "30s", "40s", "50s", "60+")


def sources(metrics):
    return {row["group"]: row for row in metrics["sources"]["rows"]}


def age_recalls(metrics):
    """{(source, band, class): (correct, total)} from the age tables of the factor report."""
    out = {}
    for table in metrics.get("factors", {}).get("tables", []):
        if table["attribute"].lower() != "age":
            continue
        for row in table["rows"]:
            for name in ("female", "male"):
                out[(table["source"], row["group"], name)] = tuple(row[name])
    return out


def recall(cell):
    correct, total = cell
    return correct / total if total else float("nan")


def balanced_accuracy(row):
    """The mean of the two classes' recalls: unlike macro-F1, it does not move with how many
    men and women a folder holds."""
    return sum(recall(row[name]) for name in ("female", "male")) / 2


def print_ranking(old_rows, new_rows):
    """Each source's ROC AUC (its ranking, whatever the threshold; where test_script.py
    wrote it) and balanced accuracy at each model's threshold. Not part of the rules: it says
    whether a loss of macro-F1 is in the ranking or in where the one threshold cuts it."""
    names = sorted(set(old_rows) & set(new_rows))
    auc = all(old_rows[n].get("roc_auc") is not None and new_rows[n].get("roc_auc") is not None
              for n in names)
    print(f"\n{'source':<24} {'ROC AUC old':>11} {'new':>7} {'balanced acc. old':>17} "
          f"{'new':>6}" if auc else f"\n{'source':<24} {'balanced acc. old':>17} {'new':>6}")
    for name in names:
        a, b = old_rows[name], new_rows[name]
        ranking = f" {a['roc_auc']:11.4f} {b['roc_auc']:7.4f}" if auc else ""
        print(f"{name:<24}{ranking} {balanced_accuracy(a):17.3f} {balanced_accuracy(b):6.3f}")


def main(old_file, new_file):
    with open(old_file) as f:
        old = json.load(f)
    with open(new_file) as f:
        new = json.load(f)
    print(f"thresholds: old {old['model_threshold']['threshold']}, "
          f"new {new['model_threshold']['threshold']}")
    print(f"{'source':<24} {'old':>7} {'new':>7} {'change':>8}")
    losses, part_losses = [], []
    old_rows, new_rows = sources(old), sources(new)
    for name in sorted(set(old_rows) & set(new_rows)):
        a, b = old_rows[name]["macro_f1"], new_rows[name]["macro_f1"]
        print(f"{name:<24} {a:7.4f} {b:7.4f} {b - a:+8.4f}")
        if b < a - MAX_LOSS:
            losses.append(name)
        if b < a - (MAX_PART_LOSS if name in DEGRADATIONS else MAX_LOSS):
            part_losses.append(name)
    print_ranking(old_rows, new_rows)
    old_age, new_age = age_recalls(old), age_recalls(new)
    print(f"\n{'source, band, class':<32} {'old':>14} {'new':>14}")
    for key in sorted(set(old_age) & set(new_age)):
        a, b = old_age[key], new_age[key]
        print(f"{', '.join(key):<32} {a[0]:>5}/{a[1]:<4} {recall(a):.3f} "
              f"{b[0]:>5}/{b[1]:<4} {recall(b):.3f}")

    def worst(table):
        cells = {k: recall(v) for k, v in table.items() if k[1] in RULE_BANDS}
        key = min(cells, key=cells.get)
        return key, cells[key]

    if not old_age or not new_age:
        print("\nno age attribute in both files: the rule cannot be checked")
        return 1
    (old_key, old_worst), (new_key, new_worst) = worst(old_age), worst(new_age)
    print(f"\nworst (band, class) recall: old {old_worst:.3f} ({', '.join(old_key)}), "
          f"new {new_worst:.3f} ({', '.join(new_key)})")
    print(f"sources losing more than {MAX_LOSS} macro-F1: {', '.join(losses) or 'none'}")
    print(f"rule of stages 5-6: {'PASSES' if new_worst > old_worst and not losses else 'FAILS'}")
    print(f"sources losing more than {MAX_LOSS} (a single degradation: {MAX_PART_LOSS}): "
          f"{', '.join(part_losses) or 'none'}")
    if "facecom_distorted/dev" not in old_rows or "facecom_distorted/dev" not in new_rows:
        print("rule from stage 7: needs facecom_distorted/dev (all seven degradations) in both files")
        return 1
    print(f"rule from stage 7: {'PASSES' if new_worst > old_worst and not part_losses else 'FAILS'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[0])
    sys.exit(main(*sys.argv[1:]))
