"""quantify.py: adjusted classify-and-count and its bootstrap interval, on synthetic archives
with a known share of women, scored by a stub scorer with known error rates."""

import numpy as np
import pytest

from facegender.evaluation import quantify

THRESHOLD = 0.5


def stub_scores(labels, rng, female_recall, male_recall):
    """P(male) for each face (0 female, 1 male) from a scorer with exactly these recalls in
    expectation: a face is called right with its class's recall, its score drawn uniformly on
    the called side of THRESHOLD."""
    labels = np.asarray(labels)
    right = rng.random(len(labels)) < np.where(labels == 0, female_recall, male_recall)
    called_male = np.where(right, labels == 1, labels == 0)
    u = rng.random(len(labels))
    return np.where(called_male, THRESHOLD + (1 - THRESHOLD) * u, THRESHOLD * u)


def confusion_of(labels, scores):
    called = (scores >= THRESHOLD).astype(int)
    return [[int(np.sum((labels == t) & (called == c))) for c in (0, 1)] for t in (0, 1)]


def test_rates_and_the_adjusted_share_invert_the_count():
    tpr, fpr = quantify.rates([[80, 20], [3, 97]])
    assert (tpr, fpr) == (0.8, 0.03)
    true_share = 0.3
    q = true_share * tpr + (1 - true_share) * fpr  # what a classifier with these rates counts
    assert quantify.adjusted_share(q, tpr, fpr) == pytest.approx(true_share)
    assert quantify.adjusted_share(0.01, tpr, fpr) == 0.0  # clipped below
    assert quantify.adjusted_share(0.95, tpr, fpr) == 1.0  # and above
    assert np.isnan(quantify.adjusted_share(0.5, 0.4, 0.4))


def test_uncorrectable_rates_are_refused_with_the_reason():
    assert quantify.uncorrectable([[80, 20], [3, 97]]) is None
    assert "no male faces" in quantify.uncorrectable([[80, 20], [0, 0]])
    assert "divide by nearly zero" in quantify.uncorrectable([[55, 45], [45, 55]])
    assert quantify.uncorrectable([[55, 45], [45, 55]], min_gap=0.05) is None


def test_corrected_interval_covers_the_true_share_and_the_raw_count_is_biased():
    """200 seeded archives of 4,000 faces, 30% women, scored by a stub that finds women at 0.80
    and men at 0.97; the rates are measured on 200 labelled women and 300 labelled men scored
    by the same stub. The corrected 95% interval must cover 0.30 in at least 90% of them; the
    raw count's share sits near 0.3 * 0.80 + 0.7 * 0.03 = 0.261, and its interval (the
    archive's sampling error only) rarely reaches the truth."""
    true_share, female_recall, male_recall = 0.3, 0.80, 0.97
    covered, raw_covered, raw, corrected = 0, 0, [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        archive = (rng.random(4000) >= true_share).astype(int)  # 0 female, 1 male
        called_female = stub_scores(archive, rng, female_recall, male_recall) < THRESHOLD
        labelled = np.repeat([0, 1], [200, 300])
        confusion = confusion_of(labelled, stub_scores(labelled, rng, female_recall,
                                                       male_recall))
        r = quantify.corrected_share(called_female, confusion, n_resamples=1000, seed=seed)
        covered += r["interval"][0] <= true_share <= r["interval"][1]
        raw_covered += r["raw_interval"][0] <= true_share <= r["raw_interval"][1]
        raw.append(r["raw_share"])
        corrected.append(r["corrected_share"])
    print(f"coverage: corrected {covered / 200:.3f}, raw {raw_covered / 200:.3f}")
    assert covered / 200 >= 0.90
    assert raw_covered / 200 <= 0.10
    assert np.mean(raw) == pytest.approx(0.261, abs=0.01)  # biased low: women under-counted
    assert np.mean(corrected) == pytest.approx(true_share, abs=0.01)


def test_clusters_widen_the_interval_when_a_photo_s_faces_go_together():
    """100 photos of 10 faces, each photo all women or all men: 100 independent draws, not
    1,000. Resampling photos gives a wider interval than resampling faces."""
    rng = np.random.default_rng(0)
    photo_female = rng.random(100) < 0.4
    called = np.repeat(photo_female, 10)
    photos = np.repeat(np.arange(100), 10)
    confusion = [[1000, 0], [0, 1000]]  # a perfect classifier: only the archive's error left
    by_face = quantify.corrected_share(called, confusion, seed=1)
    by_photo = quantify.corrected_share(called, confusion, clusters=photos, seed=1)
    width = lambda r: r["interval"][1] - r["interval"][0]  # noqa: E731
    assert width(by_photo) > 2 * width(by_face)
    assert by_photo["corrected_share"] == by_face["corrected_share"] == called.mean()


def test_no_faces_gives_nan_not_an_error():
    r = quantify.corrected_share([], [[8, 2], [1, 9]])
    assert r["faces"] == 0 and np.isnan(r["corrected_share"]) and np.isnan(r["interval"][0])


def test_too_few_photos_get_no_interval_rather_than_a_false_one():
    # One face called male: every bootstrap draw is the same, which is no evidence that the
    # share is exactly 0; the estimate stays, the intervals go.
    one = quantify.corrected_share([False], [[90, 10], [5, 95]])
    assert one["corrected_share"] == 0.0
    assert np.isnan(one["interval"]).all() and np.isnan(one["raw_interval"]).all()
    # Photos, not faces, are the units: 30 faces in 3 photos are still too few.
    faces = np.arange(30) % 2 == 0
    few = quantify.corrected_share(faces, [[90, 10], [5, 95]], clusters=np.arange(30) // 10)
    assert np.isnan(few["interval"]).all()
    enough = quantify.corrected_share(faces, [[90, 10], [5, 95]])
    assert enough["interval"][0] < enough["corrected_share"] < enough["interval"][1]
