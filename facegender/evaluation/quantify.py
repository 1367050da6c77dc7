"""Quantification: the share of women in a collection, corrected for the classifier's errors.

Counting the faces a classifier calls female is biased whenever its two recalls differ: with
female recall (true positive rate, "positive" = female) tpr and the share of men it calls
female fpr, the share it reports is q = p * tpr + (1 - p) * fpr for a true share p. Adjusted
classify-and-count (Forman 2008, "Quantifying counts and costs via classification") solves
this for p with rates measured on labelled faces:

    p = (q - fpr) / (tpr - fpr), clipped to [0, 1].

It assumes the collection's faces err like the labelled ones (the same recall for a woman
here as there); it needs tpr - fpr well above 0, since the estimate divides by it.

The interval is a percentile bootstrap over both sources of error: the collection's predicted
labels (resampled by cluster, such as a photo or a stretch of video, whose faces are not
independent draws) and the labelled faces the rates come from (each class's predictions
redrawn binomially). NumPy only; pure functions, no I/O.
"""

import numpy as np

# Below this gap between the female recall and the share of men called female the correction
# divides by nearly nothing: a model that barely tells the two apart, whose corrected share
# would swing across most of [0, 1] with a handful of faces.
MIN_RATE_GAP = 0.2
CONFIDENCE = 0.95
N_RESAMPLES = 2000
# With fewer independent units (photos, or stretches of video) than this, a bootstrap of the
# collection says little of its sampling error (one face: every draw the same, an interval of
# width 0), so no interval is given.
MIN_UNITS = 20
# Bootstrap draws of the collection are made this many cells (resamples x clusters) at a time.
_CHUNK_CELLS = 4_000_000


def rates(confusion):
    """(tpr, fpr) from a 2x2 confusion matrix, "positive" = female.

    `confusion` is [[female called female, female called male], [male called female, male
    called male]] (rows: true class, columns: predicted, class 0 female), as
    `metrics.evaluation_report` gives it. tpr is the female recall, fpr the share of men called
    female (1 - male recall). NaN for a class with no faces.
    """
    c = np.asarray(confusion, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(c[0, 0] / c[0].sum()), float(c[1, 0] / c[1].sum())


def adjusted_share(raw_share, tpr, fpr):
    """Adjusted classify-and-count: (q - fpr) / (tpr - fpr), clipped to [0, 1]; vectorised.
    NaN where tpr - fpr is not positive (the correction is undefined there)."""
    q, tpr, fpr = (np.asarray(v, dtype=float) for v in (raw_share, tpr, fpr))
    gap = tpr - fpr
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(gap > 0, (q - fpr) / np.where(gap > 0, gap, 1.0), np.nan)
    p = np.clip(p, 0.0, 1.0)
    return float(p) if p.ndim == 0 else p


def uncorrectable(confusion, min_gap=MIN_RATE_GAP):
    """Why the correction cannot be made with these rates, as a phrase; None when it can.

    Refused: a class with no labelled faces (its recall is unknown), and a gap tpr - fpr below
    `min_gap` (the denominator is near zero)."""
    c = np.asarray(confusion)
    if c.shape != (2, 2) or np.any(c < 0):
        return "the counts are not a 2x2 table of non-negative numbers"
    empty = [name for name, row in zip(("female", "male"), c) if row.sum() == 0]
    if empty:
        return (f"no {' or '.join(empty)} faces among the labelled ones, so the "
                f"{' and '.join(empty)} recall is unknown")
    tpr, fpr = rates(c)
    if tpr - fpr < min_gap:
        return (f"female recall {tpr:.3f} minus the share of men called female {fpr:.3f} is "
                f"{tpr - fpr:.3f}, below {min_gap}: the correction would divide by nearly zero")
    return None


def _resampled_rates(confusion, n_resamples, rng):
    """(tpr*, fpr*) arrays: each class's labelled faces redrawn binomially at its own rate."""
    c = np.asarray(confusion, dtype=np.int64)
    n_female, n_male = int(c[0].sum()), int(c[1].sum())
    tpr, fpr = rates(c)
    return (rng.binomial(n_female, tpr, n_resamples) / n_female,
            rng.binomial(n_male, fpr, n_resamples) / n_male)


def _resampled_raw_shares(predicted_female, clusters, n_resamples, rng):
    """q* array: the collection's share called female, its clusters drawn with replacement
    (every face its own cluster when `clusters` is None: then a binomial draw)."""
    called = np.asarray(predicted_female, dtype=bool)
    n = len(called)
    if clusters is None:
        return rng.binomial(n, called.mean(), n_resamples) / n
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    faces = np.bincount(index).astype(float)
    female = np.bincount(index, weights=called.astype(float))
    k = len(faces)
    out = np.empty(n_resamples)
    step = max(1, _CHUNK_CELLS // k)
    for start in range(0, n_resamples, step):
        m = min(step, n_resamples - start)
        draws = rng.multinomial(k, np.full(k, 1.0 / k), size=m).astype(float)
        out[start:start + m] = (draws @ female) / (draws @ faces)
    return out


def corrected_share(predicted_female, confusion, clusters=None, n_resamples=N_RESAMPLES,
                    confidence=CONFIDENCE, seed=0):
    """The share of women among a collection's faces, raw and corrected, with intervals.

    Parameters
    ----------
    predicted_female : array of bool, one per face
        The classifier's call on each face of the collection (True: female).
    confusion : 2x2 array
        The classifier's counts on labelled faces, as in `rates`.
    clusters : array, one per face, optional
        Faces that are not independent draws (one photo's faces, one stretch of a video) share
        a value and are resampled together; None: every face on its own.
    n_resamples, confidence, seed :
        The percentile bootstrap: its draws, the interval's coverage, the generator's seed
        (the same seed gives every group of a table the same draws of the rates).

    Returns
    -------
    dict of plain values: faces, female (faces called female), raw_share and raw_interval
    (the count's share, its interval from the collection's draws only), corrected_share and
    interval (adjusted classify-and-count, both sources of error), tpr, fpr, and
    undefined_resamples (draws in which tpr* - fpr* <= 0, left out of the interval).
    Share and intervals are NaN for no faces; the intervals are NaN for fewer than MIN_UNITS
    independent units (faces, or clusters); call `uncorrectable` first.
    """
    called = np.asarray(predicted_female, dtype=bool)
    tpr, fpr = rates(confusion)
    out = {"faces": int(len(called)), "female": int(called.sum()), "tpr": tpr, "fpr": fpr}
    nan = float("nan")
    if len(called) == 0:
        return {**out, "raw_share": nan, "raw_interval": [nan, nan], "corrected_share": nan,
                "interval": [nan, nan], "undefined_resamples": 0}
    rng = np.random.default_rng(seed)
    tpr_star, fpr_star = _resampled_rates(confusion, n_resamples, rng)
    q_star = _resampled_raw_shares(called, clusters, n_resamples, rng)
    p_star = adjusted_share(q_star, tpr_star, fpr_star)
    defined = p_star[~np.isnan(p_star)]
    tails = [50 * (1 - confidence), 50 * (1 + confidence)]
    q = float(called.mean())
    units = len(called) if clusters is None else len(np.unique(clusters))
    if units < MIN_UNITS:
        return {**out, "raw_share": q, "raw_interval": [nan, nan],
                "corrected_share": adjusted_share(q, tpr, fpr), "interval": [nan, nan],
                "undefined_resamples": 0}
    return {**out, "raw_share": q,
            "raw_interval": [float(v) for v in np.percentile(q_star, tails)],
            "corrected_share": adjusted_share(q, tpr, fpr),
            "interval": ([float(v) for v in np.percentile(defined, tails)] if len(defined)
                         else [nan, nan]),
            "undefined_resamples": int(len(p_star) - len(defined))}
