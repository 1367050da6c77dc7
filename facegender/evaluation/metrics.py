"""Metrics for a binary classifier whose score is P(male): threshold sweep and reports.

Pure functions on arrays; a sample is predicted male when its score is >= the threshold.
"""

import numpy as np
from scipy.special import ndtri
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from facegender.core.common import CLASS_NAMES, called


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


# A (group, class) cell needs this many images for its recall to count towards the worst:
# below it one image moves the recall by more than 5 points, and the worst cell would be
# whichever tiny group happens to hold one hard image.
MIN_RECALL_CELL = 20


def worst_recall_curve(y_true, scores, groups, thresholds, min_count=MIN_RECALL_CELL):
    """At each threshold, the lowest recall over every (group, class) cell that holds at least
    `min_count` images (every cell when none does): the people the model serves worst."""
    y = np.asarray(y_true).astype(bool)
    groups = np.zeros(len(y), int) if groups is None else np.asarray(groups)
    pred = np.asarray(scores)[None, :] >= np.asarray(thresholds)[:, None]
    cells = [(groups == g) & (y == k) for g in np.unique(groups) for k in (False, True)]
    counted = [c for c in cells if c.sum() >= min_count] or [c for c in cells if c.any()]
    recalls = [np.mean(pred[:, c] == y[c][None, :], axis=1) for c in counted]
    return np.min(recalls, axis=0)


# What a threshold can be chosen for: the (worst group's) macro-F1, or the worst (group,
# class) recall, which weighs a small group's missed class as much as a large one's.
CRITERIA = ("macro_f1", "worst_recall")


def sweep_thresholds(y_true, scores, step=0.01, groups=None, criterion="macro_f1"):
    """Return (thresholds, score) for thresholds step, 2*step, ..., 1 - step.

    The score is the macro-F1; with `groups` (one label per sample), the worst group's
    macro-F1, so that one threshold serves every group rather than the largest. With
    `criterion="worst_recall"` it is worst_recall_curve's lowest (group, class) recall.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    thresholds = np.round(np.arange(step, 1.0 - step / 2, step), 6)
    if criterion == "worst_recall":
        return thresholds, worst_recall_curve(y_true, scores, groups, thresholds)
    if groups is None:
        return thresholds, macro_f1_curve(y_true, scores, thresholds)
    return thresholds, worst_group_f1_curve(y_true, scores, groups, thresholds)


def best_threshold(y_true, scores, step=0.01, groups=None, criterion="macro_f1"):
    """The threshold with the highest macro-F1 (with `groups`: the highest worst-group
    macro-F1; with `criterion="worst_recall"`: the highest worst (group, class) recall), and
    that score.

    Often a whole range of thresholds ties for the best; the middle of the widest tied range is
    returned, the choice least sensitive to small shifts in the scores on new data.
    """
    thresholds, f1 = sweep_thresholds(y_true, scores, step, groups, criterion)
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
    y_pred = called(scores, threshold)
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
    values; `female` and `male` are (correct, total). `balanced_accuracy` is the mean of the
    two recalls, which unlike macro-F1 does not move with the group's share of men. `roc_auc`
    does not depend on the threshold: how well the group's scores rank its men above its women,
    whatever cut one threshold makes for every group. Both are None for a group of one class."""
    y_true, scores, groups = np.asarray(y_true), np.asarray(scores), np.asarray(groups)
    rows = []
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        r = evaluation_report(y_true[mask], scores[mask], threshold)
        acc = r["per_class_accuracy"]
        both = len(set(y_true[mask].tolist())) == 2
        rows.append({"group": group, "images": int(mask.sum()), "macro_f1": r["macro_f1"],
                     "female": acc["female"], "male": acc["male"],
                     "balanced_accuracy": float(np.mean([ok / n for ok, n in acc.values()]))
                     if both else None,
                     "roc_auc": float(roc_auc_score(y_true[mask], scores[mask])) if both
                     else None})
    return rows


# ---------------------------------------------------------------------------
# Factors: metrics per value of an image attribute (age band, origin, ...), with intervals

def wilson_interval(successes, total, confidence=0.95):
    """Wilson score interval for a binomial proportion, such as one class's recall.

    Unlike the normal approximation it stays inside [0, 1] and does not collapse to a point
    at 0/n or n/n, which matters for the small groups a factor table has.

    Parameters
    ----------
    successes : int
        Number of successes (for a recall: the correctly classified images of the class).
    total : int
        Number of trials (the images of the class).
    confidence : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    low, high : float
        The interval's bounds; both NaN when `total` is 0.
    """
    if total == 0:
        return float("nan"), float("nan")
    z = float(ndtri(0.5 + confidence / 2))
    p, n = successes / total, total
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The interval holds p; max/min only guard the last bit of rounding, which at 0/n and
    # n/n left a bound a hair inside it (and matplotlib refuses a negative error bar).
    return float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))


def macro_f1_from_counts(confusion):
    """Macro-F1 over both classes from 2x2 confusion matrices, vectorised.

    Parameters
    ----------
    confusion : array-like of shape (..., 2, 2)
        Counts with rows the true class and columns the predicted one, female first.

    Returns
    -------
    macro_f1 : ndarray of shape (...)
        A class with no true and no predicted samples scores F1 = 0, as in `macro_f1_curve`
        and scikit-learn's `zero_division=0`.
    """
    c = np.asarray(confusion, dtype=float)
    off = c[..., 0, 1] + c[..., 1, 0]  # every mistake counts against both classes' F1
    f1s = []
    for k in (0, 1):
        denom = 2 * c[..., k, k] + off
        f1s.append(np.where(denom > 0, 2 * c[..., k, k] / np.maximum(denom, 1), 0.0))
    return (f1s[0] + f1s[1]) / 2


def bootstrap_macro_f1_interval(confusion, n_resamples=1000, confidence=0.95, seed=0):
    """Percentile bootstrap interval for the macro-F1 of a 2x2 confusion matrix.

    Resampling the images with replacement and counting again is the same as drawing the four
    cell counts from a multinomial with the observed cell shares, so the cost does not grow
    with the number of images. Macro-F1 has no closed-form interval like Wilson's.

    Parameters
    ----------
    confusion : array-like of shape (2, 2)
        Counts with rows the true class and columns the predicted one, female first.
    n_resamples : int, default=1000
        Bootstrap resamples.
    confidence : float, default=0.95
        Coverage of the interval.
    seed : int, default=0
        Seed of the resampling, so the same counts always give the same interval.

    Returns
    -------
    low, high : float
        The interval's bounds; both NaN when the matrix is empty.
    """
    counts = np.asarray(confusion, dtype=np.int64).reshape(4)
    n = int(counts.sum())
    if n == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_resamples)
    scores = macro_f1_from_counts(draws.reshape(n_resamples, 2, 2))
    low, high = np.quantile(scores, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def factor_table(groups, y_true, scores, threshold, order=None, n_resamples=1000,
                 confidence=0.95, seed=0):
    """`group_table` with a confidence interval for every cell: one row per attribute value.

    Parameters
    ----------
    groups : array-like of shape (n_samples,)
        Each sample's attribute value (an age band, an origin, "unknown", ...).
    y_true : array-like of shape (n_samples,)
        True class indices, 0 female and 1 male.
    scores : array-like of shape (n_samples,)
        P(male); a sample is predicted male when its score is >= `threshold`.
    threshold : float
        The decision threshold.
    order : callable, default=None
        Sort key for the values (e.g. `attributes.band_order`, age bands in age order);
        None sorts by name.
    n_resamples, confidence, seed
        Passed to `bootstrap_macro_f1_interval`; `confidence` to `wilson_interval` too.

    Returns
    -------
    rows : list of dict
        `group_table`'s keys (`group`, `images`, `macro_f1`, `female` and `male` as
        [correct, total]), plus `macro_f1_interval` (bootstrap), and per class `<class>_recall`
        and `<class>_recall_interval` (Wilson); None where the group has no image of the class.
    """
    rows = group_table(groups, y_true, scores, threshold)
    if order is not None:
        rows.sort(key=lambda r: order(r["group"]))
    for row in rows:
        (f_ok, f_n), (m_ok, m_n) = row["female"], row["male"]
        confusion = [[f_ok, f_n - f_ok], [m_n - m_ok, m_ok]]
        row["macro_f1_interval"] = list(bootstrap_macro_f1_interval(
            confusion, n_resamples, confidence, seed))
        for name in CLASS_NAMES:
            ok, n = row[name]
            row[name] = [ok, n]
            row[f"{name}_recall"] = ok / n if n else None
            row[f"{name}_recall_interval"] = list(wilson_interval(ok, n, confidence)) if n else None
    return rows
