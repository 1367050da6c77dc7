"""--report (report.py): one self-contained HTML file whose gallery shows the faces as the model
saw them; parsed here, not looked at."""

import base64
import csv
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from facegender.data import decoding
from facegender.cli import predict
from facegender.drawing import report
from facegender.cli import evaluate as test_script
from test_audit import make_sample, scores_of


class Page(HTMLParser):
    """Every img (src, alt, the enclosing figure's class), every link-like attribute, the text."""

    def __init__(self, text):
        super().__init__()
        self.images, self.refs, self.tags, self.text, self._figure = [], [], set(), [], ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "figure":
            self._figure = attrs.get("class", "")
        if tag == "img":
            self.images.append((attrs["src"], attrs.get("alt", ""), self._figure))
        self.refs += [v for k, v in attrs.items() if k in ("href", "src")]

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = ""

    def handle_data(self, text):
        self.text.append(text)


def decode(src):
    assert src.startswith("data:image/")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def check_self_contained(page):
    assert not page.tags & {"script", "link", "iframe", "object"}
    assert all(ref.startswith("data:image/") for ref in page.refs)


def test_evaluation_report_is_one_file_and_its_gallery_shows_the_model_s_input(trained,
                                                                               tmp_path):
    out, html_path = tmp_path / "eval", tmp_path / "report.html"
    assert test_script.main(["--data_path", trained["data"], "--model_path", trained["model"],
                             "--output_dir", str(out), "--no_copy", "--verbose", "0",
                             "--report", str(html_path)]) == 0
    page = Page(html_path.read_text(encoding="utf-8"))
    check_self_contained(page)
    text = " ".join(page.text)
    assert "Numbers" in text and "Figures" in text and "macro-F1 at it" in text
    figures = [src for src, alt, kind in page.images if not kind]
    assert {alt for _, alt, kind in page.images if not kind} >= {"confusion_matrix.png",
                                                                 "roc_curve.png"}
    assert all(decode(src).ndim == 3 for src in figures)
    with open(out / "evaluation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    wrong = [r for r in rows if r["correct"] == "0"]
    tiles = [(src, alt) for src, alt, kind in page.images if kind == "wrong"]
    assert len(tiles) >= min(len(wrong), report.GALLERY_MISTAKES) > 0
    # The first tile is the most confident mistake, shown as the model was given it.
    threshold = json.load(open(out / "metrics.json"))["model_threshold"]["threshold"]
    worst = max(wrong, key=lambda r: abs(float(r["p_male"]) - threshold))
    assert os.path.basename(worst["path"]) in tiles[0][1]
    size = 64  # the tiny model's input
    seen = np.asarray(Image.fromarray(decoding.load_image(worst["path"], size)).resize(
        (report.TILE, report.TILE), Image.BILINEAR)).astype(int)
    assert np.abs(decode(tiles[0][0]).astype(int) - seen).mean() < 6  # JPEG's loss only


def test_audit_report_shows_the_sample_s_mistakes_and_the_unsure_faces(trained, tmp_path):
    scores, threshold = scores_of(trained, tmp_path)
    sample = make_sample(tmp_path / "sample", scores, threshold, [[8, 2], [1, 9]])
    html_path = tmp_path / "audit.html"
    assert predict.main([trained["data"], "--model_path", trained["model"], "--output",
                         str(tmp_path / "p.csv"), "--verbose", "0", "--threshold",
                         f"{threshold:.6f}", "--audit_sample", sample, "--precision", "f32",
                         "--report", str(html_path)]) == 0
    page = Page(html_path.read_text(encoding="utf-8"))
    check_self_contained(page)
    kinds = [kind for _, _, kind in page.images]
    assert kinds.count("wrong") == 3  # 2 women called male, 1 man called female
    # The sample is drawn from the collection: a face among its mistakes is not shown again
    # among the collection's unsure ones.
    mistakes = {file_digest(p) for p in (*(tmp_path / "sample" / "female").glob("1_*"),
                                         *(tmp_path / "sample" / "male").glob("0_*"))}
    near = {file_digest(p) for p, s in scores.items() if abs(s - threshold) < report.UNSURE_BAND}
    assert near & mistakes  # the case this checks occurs
    assert kinds.count("unsure") == min(len(near - mistakes), report.GALLERY_UNSURE)
    text = " ".join(page.text)
    assert "share of women, corrected" in text and "--audit_sample" in text
    assert "By folder" in text  # female/ and male/ are two sub-folders of the input
    # The page says what was audited, with what and when.
    for what in ("This audit", os.path.abspath(trained["data"]), os.path.abspath(sample),
                 "(20 labelled faces)", os.path.abspath(trained["model"]), "SHA-256",
                 f"{threshold:.2f}", "predict.py " + trained["data"]):
        assert what in text, what


def file_digest(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_shares_figure_has_an_overall_row_and_its_legend_clear_of_the_data():
    share = {"faces": 40, "counts": {"female": 10, "male": 30}, "raw_share": 0.25,
             "raw_interval": [0.1, 0.4], "corrected_share": 0.3, "interval": [0.12, 0.5]}
    summary = {**share, "by_folder": [{**share, "group": "2019"},
                                      {**share, "group": "2020", "raw_share": 0.95,
                                       "raw_interval": [0.9, 1.0], "corrected_share": 0.97,
                                       "interval": [0.92, 1.0]}]}
    fig = report.shares_figure(summary)
    ax = fig.axes[0]
    ticks = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())))
    assert [name for _, name in ticks][::-1] == ["all faces", "2019", "2020"]  # from the top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    (legend,) = fig.legends
    assert ax.get_legend() is None
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_gallery_indices_mistakes_first_then_the_nearest():
    y = [0, 0, 1, 1, 1]
    p = [0.9, 0.45, 0.1, 0.55, 0.99]
    wrong, near = report.gallery_indices(y, p, 0.5)
    assert list(wrong) == [0, 2]  # both 0.4 from the threshold: in order
    assert list(near) == [1, 3]  # 0.05 from it; 0.99 is not near
    wrong, near = report.gallery_indices(None, p, 0.5)
    assert list(wrong) == [] and list(near) == [1, 3]
