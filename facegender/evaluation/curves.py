"""The numbers behind the ROC, precision-recall and reliability figures, and the figures
written with them (drawn by facegender.drawing.plots).

The number functions are pure functions on arrays (male is the positive class, the score is
P(male), a sample is predicted male when its score is >= the threshold); their results go in
metrics.json.
"""

import os

import numpy as np
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

from facegender.core.common import CLASS_NAMES, called
from facegender.drawing import plots


# ---------------------------------------------------------------------------
# Numbers

def operating_point(y_true, scores, threshold):
    """Rates at one threshold: true/false positive rate, precision and recall of the male class.

    A rate whose denominator is 0 (no male images, no female images, nothing called male) is None.
    """
    y = np.asarray(y_true).astype(bool)
    pred = called(scores, threshold) == 1
    tp, fp = int(np.sum(y & pred)), int(np.sum(~y & pred))
    positives, negatives = int(y.sum()), int((~y).sum())
    tpr = tp / positives if positives else None
    return {"threshold": float(threshold), "tpr": tpr, "recall": tpr,
            "fpr": fp / negatives if negatives else None,
            "precision": tp / (tp + fp) if tp + fp else None}


def both_classes(y_true):
    """ROC and precision-recall need at least one image of each class."""
    return len(np.unique(np.asarray(y_true))) == 2


def roc_points(y_true, scores):
    """(false positive rates, true positive rates, area under the ROC curve)."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return fpr, tpr, float(roc_auc_score(y_true, scores))


def precision_recall_points(y_true, scores):
    """(precisions, recalls, average precision) for the male class."""
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return precision, recall, float(average_precision_score(y_true, scores))


def reliability_bins(y_true, scores, n_bins=10):
    """Equal-width bins of P(male): per bin its range, image count, mean P(male) and male share.

    A calibrated model's mean P(male) matches the share of male images in every bin. The last bin
    includes 1.0. Empty bins have None for the means.
    """
    y, p = np.asarray(y_true, dtype=float), np.asarray(scores, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        n = int(mask.sum())
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
                     "mean_p_male": float(p[mask].mean()) if n else None,
                     "fraction_male": float(y[mask].mean()) if n else None})
    return bins


def expected_calibration_error(y_true, scores, n_bins=10):
    """ECE: the count-weighted mean gap between mean P(male) and the male share, over the bins."""
    bins = reliability_bins(y_true, scores, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b["count"] * abs(b["mean_p_male"] - b["fraction_male"])
                     for b in bins if b["count"]) / total)


def curve_metrics(y_true, scores, threshold, n_bins=10):
    """The numbers behind the three plots, as plain JSON types, for metrics.json."""
    out = {"positive_class": CLASS_NAMES[1], "roc_auc": None, "average_precision": None,
           "operating_point": operating_point(y_true, scores, threshold)}
    if both_classes(y_true):
        out["roc_auc"] = roc_points(y_true, scores)[2]
        out["average_precision"] = precision_recall_points(y_true, scores)[2]
    out["calibration"] = {"ece": expected_calibration_error(y_true, scores, n_bins),
                          "bins": reliability_bins(y_true, scores, n_bins)}
    return out


# ---------------------------------------------------------------------------
# The curve figures, with their numbers

def save_curves(y_true, scores, threshold, out_dir):
    """Write roc_curve.png, precision_recall_curve.png and reliability_diagram.png into `out_dir`.

    Returns `curve_metrics` plus the names of the files written. ROC and precision-recall need
    both classes; with one they are skipped and listed under "skipped".
    """
    results = curve_metrics(y_true, scores, threshold)
    results["files"], results["skipped"] = [], []
    point = results["operating_point"]
    for name, figure in (("roc_curve.png", plots.roc_figure),
                         ("precision_recall_curve.png", plots.precision_recall_figure)):
        if both_classes(y_true):
            plots.save(figure(y_true, scores, point), os.path.join(out_dir, name))
            results["files"].append(name)
        else:
            results["skipped"].append(name)
    calibration = results["calibration"]
    plots.save(plots.reliability_figure(calibration["bins"], calibration["ece"]),
               os.path.join(out_dir, "reliability_diagram.png"))
    results["files"].append("reliability_diagram.png")
    return results
