import numpy as np
import pytest
from PIL import Image

from facegender.evaluation import curves
from facegender.drawing import plots


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_confusion_matrix_shows_every_count_in_its_cell(tmp_path):
    fig = plots.confusion_matrix_figure([[40, 12], [3, 55]], 0.43)
    ax = fig.axes[0]
    # Rows are the true class, columns the predicted one, female first.
    assert texts(ax) == ["40", "12", "3", "55"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["female", "male"]
    assert "0.43" in ax.get_title()
    plots.save(fig, str(tmp_path / "cm.png"))
    with Image.open(tmp_path / "cm.png") as img:
        assert img.size == (550, 462)


def test_training_curves_draw_what_the_history_has(tmp_path):
    history = {"loss": [0.3, 0.2, 0.1], "val_loss": [0.3, 0.25, 0.2],
               "val_macro_f1": [0.7, 0.8],  # resumed: the first epoch has no macro-F1
               "val_worst_recall": [0.5, 0.6, 0.65]}
    fig = plots.training_curves_figure(history)
    accuracy, loss, picked_by = fig.axes
    assert not accuracy.lines
    assert [list(line.get_xdata()) for line in loss.lines] == [[1, 2, 3], [1, 2, 3]]
    # The scores that pick the epoch, the monitored worst recall among them.
    assert [(line.get_label(), list(line.get_ydata())) for line in picked_by.lines] == [
        ("macro-F1 (worst source)", [0.7, 0.8]),
        ("worst recall (source, class)", [0.5, 0.6, 0.65])]
    plots.save(fig, str(tmp_path / "training_curves.png"))
    with Image.open(tmp_path / "training_curves.png") as img:
        assert img.size == (1650, 440)


def test_curves_mark_the_operating_point():
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.2, 0.7, 0.4])
    point = curves.operating_point(y, scores, 0.5)
    roc = plots.roc_figure(y, scores, point).axes[0]
    marker = [line for line in roc.lines if line.get_marker() == "o"]
    assert len(marker) == 1
    assert (marker[0].get_xdata()[0], marker[0].get_ydata()[0]) == pytest.approx((1 / 3, 0.5))
    pr = plots.precision_recall_figure(y, scores, point).axes[0]
    marker = [line for line in pr.lines if line.get_marker() == "o"]
    assert (marker[0].get_xdata()[0], marker[0].get_ydata()[0]) == pytest.approx((0.5, 0.5))
    # Nothing called male: precision is undefined and no point is drawn.
    none = curves.operating_point(y, scores, 0.99)
    pr = plots.precision_recall_figure(y, scores, none).axes[0]
    assert not [line for line in pr.lines if line.get_marker() == "o"]


def test_reliability_diagram_draws_the_reported_bins():
    y, scores = [1, 0, 0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25, 0.95, 0.95]
    bins = curves.reliability_bins(y, scores)
    fig = plots.reliability_figure(bins, curves.expected_calibration_error(y, scores))
    top, bottom = fig.axes
    curve = [line for line in top.lines if line.get_marker() == "s"][0]
    # One point per non-empty bin, at (mean P(male), male share) as in metrics.json.
    assert list(curve.get_xdata()) == pytest.approx([0.25, 0.95])
    assert list(curve.get_ydata()) == pytest.approx([0.25, 0.0])
    assert "0.3167" in top.get_title()
    assert list(bottom.patches[0].get_data().values) == [0, 0, 4, 0, 0, 0, 0, 0, 0, 2]
