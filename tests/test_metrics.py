import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from facegender.evaluation import metrics


def test_macro_f1_curve_agrees_with_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    scores = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    thresholds = np.array([0.05, 0.3, 0.5, 0.62, 0.9, 0.99])
    curve = metrics.macro_f1_curve(y, scores, thresholds)
    for t, f in zip(thresholds, curve):
        expected = f1_score(y, (scores >= t).astype(int), average="macro", labels=[0, 1],
                            zero_division=0)
        assert f == pytest.approx(expected)


def test_best_threshold_on_separable_scores_is_the_middle_of_the_gap():
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.1, 0.2, 0.6, 0.8, 0.9])
    t, f1 = metrics.best_threshold(y, scores)
    assert f1 == 1.0
    # Every threshold in (0.20, 0.60] separates the classes; the centre of that run is 0.40/0.41.
    assert 0.39 <= t <= 0.41


def test_best_threshold_beats_half_when_scores_are_shifted():
    y = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.linspace(0.55, 0.7, 10), np.linspace(0.75, 0.95, 10)])
    t, f1 = metrics.best_threshold(y, scores)
    assert 0.7 < t <= 0.75 and f1 == 1.0
    at_half = metrics.evaluation_report(y, scores, 0.5)["macro_f1"]
    assert at_half < f1


def test_sweep_uses_hundredth_steps():
    thresholds, curve = metrics.sweep_thresholds([0, 1], [0.2, 0.8])
    assert len(thresholds) == 99 and thresholds[0] == 0.01 and thresholds[-1] == 0.99
    assert curve.shape == thresholds.shape


def test_evaluation_report_counts_per_class():
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.7, 0.2, 0.9, 0.3])
    r = metrics.evaluation_report(y, scores, 0.5)
    assert r["per_class_accuracy"] == {"female": (2, 3), "male": (1, 2)}
    assert r["confusion_matrix"] == [[2, 1], [1, 1]]
    assert "female" in r["report_text"] and "0.6667" in r["report_text"]


def test_one_threshold_for_every_source_serves_the_worst_source():
    # Source a is large and wants a low threshold; source b is small and needs a high one.
    # Pooled, a dominates; the worst-source rule picks a threshold that serves b as well.
    y_a = np.array([0] * 40 + [1] * 40)
    s_a = np.concatenate([np.linspace(0.05, 0.25, 40), np.linspace(0.35, 0.95, 40)])
    y_b = np.array([0] * 5 + [1] * 5)
    s_b = np.array([0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95])
    y, scores = np.concatenate([y_a, y_b]), np.concatenate([s_a, s_b])
    groups = np.array(["a"] * 80 + ["b"] * 10)
    pooled_t, _ = metrics.best_threshold(y, scores)
    t, worst = metrics.best_threshold(y, scores, groups=groups)
    f1_at = lambda yy, ss, th: metrics.macro_f1_curve(yy, ss, [th])[0]  # noqa: E731
    assert worst == pytest.approx(min(f1_at(y_a, s_a, t), f1_at(y_b, s_b, t)))
    # No threshold separates both; the pooled choice serves a alone, the rule meets b halfway.
    assert min(f1_at(y_a, s_a, pooled_t), f1_at(y_b, s_b, pooled_t)) < worst - 0.1
    assert 0.25 < pooled_t <= 0.35 < t


def test_group_table_counts_each_group_at_the_threshold():
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.7, 0.8, 0.9, 0.2, 0.3])
    rows = metrics.group_table(["x", "x", "x", "x", "y", "y"], y, scores, 0.5)
    assert [r["group"] for r in rows] == ["x", "y"]
    assert rows[0]["female"] == (1, 2) and rows[0]["male"] == (2, 2)
    assert rows[1]["female"] == (1, 1) and rows[1]["male"] == (0, 1)
    assert rows[0]["images"] == 4
    # The ranking, whatever the threshold: x's men (0.8, 0.9) all score above its women
    # (0.1, 0.7), y's man (0.3) above its woman (0.2), though 0.5 calls him a woman.
    assert rows[0]["roc_auc"] == pytest.approx(1.0)
    assert rows[1]["roc_auc"] == pytest.approx(1.0)
    # Women 0.6 and 0.2, men 0.4 and 0.9: three of the four (woman, man) pairs in order.
    z = metrics.group_table(["z"] * 4, np.array([0, 0, 1, 1]), np.array([0.6, 0.2, 0.4, 0.9]), 0.5)
    assert z[0]["roc_auc"] == pytest.approx(0.75)
    one_class = metrics.group_table(["z", "z"], np.array([1, 1]), np.array([0.2, 0.9]), 0.5)
    assert one_class[0]["roc_auc"] is None and one_class[0]["balanced_accuracy"] is None
    # Balanced accuracy is scikit-learn's: x's recalls 1/2 and 2/2, y's 1/1 and 0/1.
    for row, mask in zip(rows, (slice(0, 4), slice(4, 6))):
        assert row["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(y[mask], scores[mask] >= 0.5))
    assert [r["balanced_accuracy"] for r in rows] == pytest.approx([0.75, 0.5])


def test_worst_recall_threshold_serves_the_class_a_group_misses_most():
    # Group a's men score low (a degraded photo) and group b's women score high (older
    # women): the threshold for the worst (group, class) recall meets both halfway, where the
    # worst group's macro-F1 gives up more of b's women.
    y_a = np.array([0] * 25 + [1] * 50)
    s_a = np.concatenate([np.linspace(0.02, 0.2, 25), np.linspace(0.25, 0.9, 50)])
    y_b = np.array([0] * 25 + [1] * 25)
    s_b = np.concatenate([np.linspace(0.1, 0.6, 25), np.linspace(0.7, 0.99, 25)])
    y, scores = np.concatenate([y_a, y_b]), np.concatenate([s_a, s_b])
    groups = np.array(["a"] * 75 + ["b"] * 50)
    t, worst = metrics.best_threshold(y, scores, groups=groups, criterion="worst_recall")
    recall = lambda yy, ss, k: np.mean((ss[yy == k] >= t) == k)  # noqa: E731
    by_hand = min(recall(y_a, s_a, 0), recall(y_a, s_a, 1), recall(y_b, s_b, 0),
                  recall(y_b, s_b, 1))
    assert worst == pytest.approx(by_hand)
    # By hand: a's men are found at (0.9 - t) / 0.65, b's women at (t - 0.1) / 0.5; the two
    # meet at t = 0.45, both near 0.69 (34 of 50 men, 17 of 25 women).
    assert t == pytest.approx(0.45) and worst == pytest.approx(0.68)
    f1_t, _ = metrics.best_threshold(y, scores, groups=groups)
    assert metrics.worst_recall_curve(y, scores, groups, [f1_t])[0] < worst


def test_worst_recall_leaves_out_cells_too_small_to_judge():
    # One man in group "tiny", called a woman at every threshold, does not set the score.
    y = np.array([0] * 30 + [1] * 30 + [1])
    scores = np.concatenate([np.full(30, 0.2), np.full(30, 0.8), [0.001]])
    groups = np.array(["big"] * 60 + ["tiny"])
    thresholds = [0.5]
    assert metrics.worst_recall_curve(y, scores, groups, thresholds)[0] == 1.0
    assert metrics.worst_recall_curve(y, scores, groups, thresholds, min_count=1)[0] == 0.0


def test_one_rule_calls_every_score():
    from facegender.core.common import called, called_name
    # At the threshold is male: the rule every script labels by, ties included.
    assert called(0.5, 0.5) == 1 and called(0.4999, 0.5) == 0
    assert isinstance(called(0.7, 0.5), int)
    np.testing.assert_array_equal(called(np.array([0.1, 0.5, 0.9]), 0.5), [0, 1, 1])
    assert (called_name(0.51, 0.51), called_name(0.509, 0.51)) == ("male", "female")
