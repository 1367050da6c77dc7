"""Every figure the toolkit draws, in one convention.

Each `*_figure` function takes numbers and returns a `matplotlib.figure.Figure`; `save` writes
it atomically. A bare Figure needs no pyplot state or backend choice and is freed with its last
reference, so nothing has to be closed and a long run does not accumulate figures. Each figure
has a fixed size in inches and a fixed dpi, so the same call always gives the same pixels.

The curves are drawn by scikit-learn's displays (`RocCurveDisplay`, `PrecisionRecallDisplay`,
`CalibrationDisplay`, `ConfusionMatrixDisplay`); this module adds the operating point and the
labels. Male is the positive class and the score is P(male).
"""

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from facegender.core.common import CLASS_NAMES
from facegender.core.outputs import save_figure

DPI = 110
CURVE_FIGSIZE, CURVE_DPI = (5.0, 5.0), DPI  # ROC, PR and reliability PNGs are 550 x 550
CONFUSION_FIGSIZE = (5.0, 4.2)
HISTORY_FIGSIZE = (15.0, 4.0)
FACTOR_PANEL_W, FACTOR_PANEL_H = 5.5, 4.0  # recall by age: one panel per source
# Contact sheet geometry, in inches at SHEET_DPI: each tile holds the image and a 3-line caption.
SHEET_TILE_W, SHEET_TILE_H, SHEET_HEADER, SHEET_DPI = 2.0, 2.5, 0.5, 100
SHEET_COLUMNS = 8


def save(fig, path):
    """Write `fig` to `path` (PNG from the extension) atomically, at the figure's own dpi."""
    save_figure(fig, path, dpi=fig.dpi)


# ---------------------------------------------------------------------------
# Pictures

def image_row_figure(images, titles):
    """Images (uint8 RGB) side by side, each under its title: e.g. one face under each
    degradation."""
    fig = Figure(figsize=(2.0 * len(images), 2.4), dpi=100)
    for ax, image, title in zip(np.atleast_1d(fig.subplots(1, len(images))), images, titles):
        ax.imshow(image)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Training

def training_curves_figure(history):
    """Accuracy and loss per epoch, train and validation, and the validation scores that pick
    the epoch, from a Keras-style history dict ({"loss": [...], "val_loss": [...], ...}): the
    macro-F1 (the worst source's, with several) and the lowest recall of any source and class,
    each at its own best threshold. A missing key draws no line."""
    fig = Figure(figsize=HISTORY_FIGSIZE, dpi=DPI)
    axes = fig.subplots(1, 3)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    panels = ((axes[0], "Accuracy", (("accuracy", "train"), ("val_accuracy", "validation"))),
              (axes[1], "Focal loss", (("loss", "train"), ("val_loss", "validation"))),
              (axes[2], "Validation, each at its best threshold",
               (("val_macro_f1", "macro-F1 (worst source)"),
                ("val_worst_recall", "worst recall (source, class)"))))
    for ax, title, lines in panels:
        for key, label in lines:
            values = history.get(key, [])
            if values:
                # A run resumed from an older checkpoint may lack the first epochs of a key.
                ax.plot(epochs[len(epochs) - len(values):], values, marker="o", label=label)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Evaluation

def confusion_matrix_figure(matrix, threshold):
    """The 2x2 confusion matrix (rows true, columns predicted; female first) with its counts."""
    fig = Figure(figsize=CONFUSION_FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(CLASS_NAMES)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d", text_kw={"fontsize": 14})
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold:.2f})")
    fig.tight_layout()
    return fig


def _mark(ax, x, y, label):
    """The operating point: where the model's threshold puts it on the curve."""
    ax.plot(x, y, "o", c="red", ms=8, label=label)


def roc_figure(y_true, scores, point):
    """ROC curve of the male class, with `point` (evaluation.curves.operating_point) marked.

    Needs both classes in `y_true`.
    """
    fig = Figure(figsize=CURVE_FIGSIZE, dpi=CURVE_DPI)
    ax = fig.add_subplot()
    RocCurveDisplay.from_predictions(y_true, scores, pos_label=1, name="ROC", ax=ax,
                                     plot_chance_level=True)
    _mark(ax, point["fpr"], point["tpr"], f"threshold {point['threshold']:.2f}: "
          f"TPR {point['tpr']:.3f}, FPR {point['fpr']:.3f}")
    ax.set(xlabel="false positive rate (female called male)",
           ylabel="true positive rate (male recall)", title="ROC curve, male as positive")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def precision_recall_figure(y_true, scores, point):
    """Precision-recall curve of the male class, with `point` (evaluation.curves.operating_point)
    marked when its precision is defined. Needs both classes in `y_true`."""
    fig = Figure(figsize=CURVE_FIGSIZE, dpi=CURVE_DPI)
    ax = fig.add_subplot()
    PrecisionRecallDisplay.from_predictions(y_true, scores, pos_label=1, name="male", ax=ax,
                                            plot_chance_level=True)
    if point["precision"] is not None:
        _mark(ax, point["recall"], point["precision"], f"threshold {point['threshold']:.2f}: "
              f"P {point['precision']:.3f}, R {point['recall']:.3f}")
    ax.set(xlabel="recall (male)", ylabel="precision (male)",
           title="Precision-recall curve, male as positive")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(bins, ece):
    """Reliability diagram from evaluation.curves.reliability_bins: male share against mean P(male)
    per non-empty bin, above the image count per bin; `ece` goes in the title.

    The curve is drawn from the same bins that metrics.json reports, so the picture and the
    numbers agree (scikit-learn's own binning puts a score on a bin edge in the lower bin).
    """
    fig = Figure(figsize=CURVE_FIGSIZE, dpi=CURVE_DPI)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in bins if b["count"]]
    CalibrationDisplay([b["fraction_male"] for b in filled], [b["mean_p_male"] for b in filled],
                       None, pos_label=1).plot(ax=top, name="model")
    top.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="", ylabel="share of male images",
            title=f"Reliability diagram (ECE {ece:.4f})")
    top.legend(loc="upper left", fontsize=8)
    edges = [bins[0]["low"]] + [b["high"] for b in bins]
    bottom.stairs([b["count"] for b in bins], edges, fill=True, color="grey")
    bottom.set(xlabel="predicted P(male)", ylabel="images")
    fig.tight_layout()
    return fig


def recall_by_age_figure(panels, unknown="unknown"):
    """Each class's recall per age band, one line per class with its interval as error bars,
    one panel per (title, rows) in `panels`; rows are `metrics.factor_table`'s, in age order.

    The band of images without an age (`unknown`) is left off the age axis and its count put
    in the panel's title; a band with no image of a class has no point for that class. Each
    tick says how many images the band holds, since the intervals widen as bands thin out.
    """
    fig = Figure(figsize=(FACTOR_PANEL_W * len(panels), FACTOR_PANEL_H), dpi=DPI)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, rows) in zip(axes, panels):
        known = [r for r in rows if r["group"] != unknown]
        missing = sum(r["images"] for r in rows if r["group"] == unknown)
        x = np.arange(len(known))
        for k, name in enumerate(CLASS_NAMES):
            recall = np.array([np.nan if r[f"{name}_recall"] is None else r[f"{name}_recall"]
                               for r in known])
            bounds = np.array([r[f"{name}_recall_interval"] or [np.nan, np.nan] for r in known])
            bounds = bounds.reshape(len(known), 2)
            # A small sideways offset keeps the two classes' error bars from hiding each other.
            ax.errorbar(x + (k - 0.5) * 0.08, recall, yerr=[recall - bounds[:, 0],
                                                            bounds[:, 1] - recall],
                        marker="o", capsize=3, label=f"{name} recall")
        ax.set_xticks(x, [f"{r['group']}\n{r['images']}" for r in known])
        ax.set(ylim=(0, 1.02), xlabel="age band (images)", ylabel="recall",
               title=title + (f" ({missing} without an age)" if missing else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Contact sheet

def sheet_layout(n_images, columns=SHEET_COLUMNS):
    """(rows, columns, width px, height px) of a contact sheet of `n_images` tiles.

    At least 4 columns wide (when `columns` allows), so the title fits above a short sheet.
    """
    cols = max(1, min(columns, max(n_images, 4)))
    rows = max(1, math.ceil(n_images / cols))
    width = int(round(cols * SHEET_TILE_W * SHEET_DPI))
    height = int(round((rows * SHEET_TILE_H + SHEET_HEADER) * SHEET_DPI))
    return rows, cols, width, height


def contact_sheet_figure(images, captions, title, maps=None, columns=SHEET_COLUMNS):
    """A grid of images with a caption above each (and a heat map over each when `maps` is
    given), `sheet_layout` pixels in size.

    The heat map is drawn more opaque where it is hotter, so cold regions show the plain image.
    """
    rows, cols, width, height = sheet_layout(len(images), columns)
    fig_w, fig_h = width / SHEET_DPI, height / SHEET_DPI
    fig = Figure(figsize=(fig_w, fig_h), dpi=SHEET_DPI)
    fig.suptitle(title, fontsize=9, y=1 - SHEET_HEADER / 2 / fig_h, va="center")
    caption_h, pad = 0.45, 0.05  # inches: room for three lines of 7-point text; tile margin
    side = min(SHEET_TILE_W - 2 * pad, SHEET_TILE_H - caption_h - 2 * pad)
    for i, (image, caption) in enumerate(zip(images, captions)):
        row, col = divmod(i, cols)
        left = col * SHEET_TILE_W + (SHEET_TILE_W - side) / 2
        top = SHEET_HEADER + row * SHEET_TILE_H + caption_h
        ax = fig.add_axes([left / fig_w, 1 - (top + side) / fig_h, side / fig_w, side / fig_h])
        ax.imshow(image)
        if maps is not None:
            overlay = colormaps["jet"](np.clip(maps[i], 0, 1))
            overlay[..., 3] = 0.6 * np.clip(maps[i], 0, 1)
            ax.imshow(overlay, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        ax.set_title(caption, fontsize=7, color="darkred", pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
