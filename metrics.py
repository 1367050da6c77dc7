"""Metrics for a binary classifier whose score is P(male): threshold sweep and reports.

Pure functions on arrays; a sample is predicted male when its score is >= the threshold.
"""

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from data import CLASS_NAMES


def macro_f1_curve(y_true, scores, thresholds):
    """Macro-averaged F1 (over both classes) at each threshold, vectorised.

    A class with no true and no predicted samples scores F1 = 0, as scikit-learn does with
    `zero_division=0`.
    """
    y = np.asarray(y_true).astype(bool)[None, :]
    pred = np.asarray(scores)[None, :] >= np.asarray(thresholds)[:, None]
    f1s = []
    for positive, predicted in ((y, pred), (~y, ~pred)):
        tp = np.sum(positive & predicted, axis=1)
        denom = np.sum(positive, axis=1) + np.sum(predicted, axis=1)
        f1s.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return (f1s[0] + f1s[1]) / 2


def worst_group_f1_curve(y_true, scores, groups, thresholds):
    """At each threshold, the lowest macro-F1 over the groups (for example data sources)."""
    y_true, scores, groups = np.asarray(y_true), np.asarray(scores), np.asarray(groups)
    return np.min([macro_f1_curve(y_true[groups == g], scores[groups == g], thresholds)
                   for g in np.unique(groups)], axis=0)


def sweep_thresholds(y_true, scores, step=0.01, groups=None):
    """Return (thresholds, macro_f1) for thresholds step, 2*step, ..., 1 - step.

    With `groups` (one label per sample), the score at each threshold is the worst group's
    macro-F1, so that one threshold serves every group rather than the largest.
    """
    thresholds = np.round(np.arange(step, 1.0 - step / 2, step), 6)
    if groups is None:
        return thresholds, macro_f1_curve(y_true, scores, thresholds)
    return thresholds, worst_group_f1_curve(y_true, scores, groups, thresholds)


def best_threshold(y_true, scores, step=0.01, groups=None):
    """The threshold with the highest macro-F1 (with `groups`: the highest worst-group
    macro-F1), and that score.

    Often a whole range of thresholds ties for the best; the middle of the widest tied range is
    returned, the choice least sensitive to small shifts in the scores on new data.
    """
    thresholds, f1 = sweep_thresholds(y_true, scores, step, groups)
    best = np.isclose(f1, f1.max())
    # Find runs of consecutive best thresholds and take the centre of the longest one.
    runs, start = [], None
    for i, is_best in enumerate(np.append(best, False)):
        if is_best and start is None:
            start = i
        elif not is_best and start is not None:
            runs.append((i - start, start, i - 1))
            start = None
    _, first, last = max(runs, key=lambda r: r[0])
    i = (first + last) // 2
    return float(thresholds[i]), float(f1[i])


def per_class_accuracy(y_true, y_pred):
    """{class name: (correct, total)}; per-class accuracy is the recall of that class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {name: (int(np.sum((y_true == k) & (y_pred == k))), int(np.sum(y_true == k)))
            for k, name in enumerate(CLASS_NAMES)}


def evaluation_report(y_true, scores, threshold):
    """Everything the evaluation prints and saves about one threshold, as plain JSON types."""
    y_true = np.asarray(y_true)
    y_pred = (np.asarray(scores) >= threshold).astype(int)
    labels = list(range(len(CLASS_NAMES)))
    kwargs = dict(labels=labels, target_names=list(CLASS_NAMES), digits=4, zero_division=0)
    report = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return {
        "threshold": float(threshold),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "report": report,
        "report_text": classification_report(y_true, y_pred, **kwargs),
        "per_class_accuracy": per_class_accuracy(y_true, y_pred),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }



def group_table(groups, y_true, scores, threshold):
    """Per-group metrics at `threshold` (groups: one label per sample), as rows of plain
    values; `female` and `male` are (correct, total)."""
    y_true, scores, groups = np.asarray(y_true), np.asarray(scores), np.asarray(groups)
    rows = []
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        r = evaluation_report(y_true[mask], scores[mask], threshold)
        acc = r["per_class_accuracy"]
        rows.append({"group": group, "images": int(mask.sum()), "macro_f1": r["macro_f1"],
                     "female": acc["female"], "male": acc["male"]})
    return rows
