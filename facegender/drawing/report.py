"""One self-contained HTML page to look at: the numbers, the tables, the figures and a gallery
of faces as the model saw them (test_script.py --report, predict.py --report).

Every picture is embedded (base64 PNG or JPEG), and the page has no script and no link to
anything outside it, so it opens offline, can be mailed or archived as one file, and shows the
same thing in every browser. The builders take plain values (metrics.json's, the audit
summary's) and a function that gives the model's input for a face, so nothing here loads a
model or reads a CSV.
"""

import base64
import html
import io
import os

import numpy as np

from facegender.drawing import annotate
from facegender.core.common import CLASS_NAMES, called, called_name
from facegender.core.outputs import write_text

GALLERY_MISTAKES = 96  # the most confident mistakes shown
GALLERY_UNSURE = 48  # faces whose P(male) is nearest the threshold
TILE = 128  # pixels a face is shown at
# A score this close to the threshold could land on the other side with another photo of the
# same face: the band within which --annotate draws a dashed box.
UNSURE_BAND = annotate.LOW_CONFIDENCE_BAND

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1160px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 9px;border-bottom:1px solid #eee;
text-align:right}td:first-child,th:first-child{text-align:left}.note{color:#555}
.figures img{max-width:370px;margin:4px}.gallery{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;width:128px;font-size:11px}figure img{width:128px;height:128px;display:block}
figure.wrong img{outline:3px solid #c0392b}figure.unsure img{outline:3px dashed #e69f00}
.timeline{margin:6px 0 18px}.track{display:flex;align-items:center;height:42px}
.track img,.nothumb{width:40px;height:40px;margin-right:6px}
.lane{position:relative;flex:1;height:14px;background:#f4f4f4}
.lane span{position:absolute;top:0;height:14px;min-width:2px}
.axis{display:flex;justify-content:space-between;margin-left:46px;color:#555;font-size:12px}
"""


def seconds(value):
    """'1 second', '0.5 seconds': a length of video in words."""
    return f"{value:g} second" + ("" if value == 1 else "s")

def esc(value):
    # A file name that is not UTF-8 shows its odd bytes as escapes (\udce9), not as bytes
    # that would make the page invalid UTF-8.
    return html.escape(str(value).encode("utf-8", "backslashreplace").decode("utf-8"))


def image_uri(image, fmt="JPEG"):
    """A data: URI of an image (a PIL image or a uint8 array)."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def file_uri(path):
    """A data: URI of a PNG file already written (the evaluation's figures)."""
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def figure_uri(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def table(header, rows):
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def gallery(tiles):
    """tiles: (image, caption lines, 'wrong' | 'unsure' | '')."""
    figures = "".join(
        f'<figure class="{kind}"><img src="{image_uri(img)}" alt="{esc(" ".join(lines))}">'
        f'<figcaption>{"<br>".join(esc(line) for line in lines)}</figcaption></figure>'
        for img, lines, kind in tiles)
    return f'<div class="gallery">{figures}</div>'


def page(title, sections):
    """The whole HTML document: sections are (heading, HTML) pairs."""
    body = "".join(f"<h2>{esc(h)}</h2>{content}" for h, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}'
            f"</title><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}"
            "</body></html>\n")


def tile_image(image):
    from PIL import Image
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((TILE, TILE),
                                                                     Image.BILINEAR)


def interval(bounds):
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def recall_cell(ok_n, bounds=None):
    ok, n = ok_n
    return (f"{ok}/{n} = {ok / n:.3f}" + (f" {interval(bounds)}" if bounds else "")) if n else "-"


def group_rows(rows):
    return [[r["group"], r["images"], f"{r['macro_f1']:.4f}"
             + (f" {interval(r['macro_f1_interval'])}" if "macro_f1_interval" in r else ""),
             *(recall_cell(r[name], r.get(f"{name}_recall_interval")) for name in CLASS_NAMES)]
            for r in rows]


GROUP_HEADER = ["group", "images", "macro-F1", "female recall", "male recall"]


# ---------------------------------------------------------------------------
# Choosing the faces to show

def gallery_indices(y_true, scores, threshold, mistakes=GALLERY_MISTAKES, unsure=GALLERY_UNSURE):
    """(mistakes, most confident first; the faces nearest the threshold that are not among
    them, within UNSURE_BAND of it). Without labels (y_true None) there are no mistakes."""
    p = np.asarray(scores, dtype=float)
    wrong = np.array([], dtype=int)
    if y_true is not None:
        y = np.asarray(y_true)
        wrong = np.flatnonzero(called(p, threshold) != y)
        confidence = np.abs(p[wrong] - threshold)
        wrong = wrong[np.argsort(-confidence, kind="stable")][:mistakes]
    rest = np.setdiff1d(np.arange(len(p)), wrong)
    rest = rest[np.abs(p[rest] - threshold) < UNSURE_BAND]
    near = rest[np.argsort(np.abs(p[rest] - threshold), kind="stable")][:unsure]
    return wrong, near


def caption(path, p_male, threshold, true=None, extra=""):
    name = os.path.basename(path)
    name = name if len(name) <= 22 else name[:9] + "..." + name[-10:]
    name_called = called_name(p_male, threshold)
    first = f"true {true}, called {name_called}" if true else f"called {name_called}"
    return [name + extra, first, f"P(male) {p_male:.3f}"]


# ---------------------------------------------------------------------------
# The two pages

def evaluation_page(results, out_dir, paths, y_true, scores, crop):
    """test_script.py's page: `results` is metrics.json's content, `out_dir` holds its figures,
    `crop(i)` gives image i as the model saw it."""
    at = results["model_threshold"]
    t = at["threshold"]
    numbers = table(["", "value"], [
        ["images", results["images"]],
        ["model", os.path.basename(results["model_path"])],
        ["threshold", f"{t:.2f} ({at['source']})"],
        ["macro-F1 at it", f"{at['macro_f1']:.4f}"],
        *[[f"{name} recall", recall_cell(at["per_class_accuracy"][name])]
          for name in CLASS_NAMES],
        ["best threshold for this data (optimistic)",
         f"{results['best_threshold']['threshold']:.2f}, macro-F1 "
         f"{results['best_threshold']['macro_f1']:.4f}"],
        ["ROC AUC", "-" if results["curves"]["roc_auc"] is None
         else f"{results['curves']['roc_auc']:.4f}"],
        ["expected calibration error", f"{results['curves']['calibration']['ece']:.4f}"]])
    sections = [("Numbers", numbers)]
    if "sources" in results:
        sections.append(("By source", table(GROUP_HEADER, group_rows(results["sources"]["rows"]))))
    if "groups" in results:
        sections.append((f"By {results['groups']['by']}",
                         table(GROUP_HEADER, group_rows(results["groups"]["rows"]))))
    for f in results.get("factors", {}).get("tables", []):
        sections.append((f"By {f['attribute']} ({f['source']}), 95% intervals",
                         table(GROUP_HEADER, group_rows(f["rows"]))))
    pictures = [name for name in ("confusion_matrix.png", *results["curves"]["files"],
                                  "recall_by_age.png")
                if os.path.exists(os.path.join(out_dir, name))]
    sections.append(("Figures", '<div class="figures">' + "".join(
        f'<img src="{file_uri(os.path.join(out_dir, n))}" alt="{esc(n)}">' for n in pictures)
        + "</div>"))
    wrong, near = gallery_indices(y_true, scores, t)
    labels = [CLASS_NAMES[int(y)] for y in y_true]
    total_wrong = int(np.sum(called(scores, t) != np.asarray(y_true)))
    tiles = ([(tile_image(crop(i)), caption(paths[i], scores[i], t, labels[i]), "wrong")
              for i in wrong]
             + [(tile_image(crop(i)), caption(paths[i], scores[i], t, labels[i]),
                 "wrong" if called(scores[i], t) != y_true[i] else "unsure") for i in near])
    sections.append(("Faces as the model saw them", (
        f'<p class="note">Solid red: the {len(wrong)} most confident of {total_wrong} mistakes. '
        f"Dashed orange: the {len(near)} other faces nearest the threshold (within "
        f"{UNSURE_BAND} of it), where a small change of the photo could flip the call.</p>")
        + gallery(tiles)))
    return page("facegender evaluation", sections)


def share_cells(s):
    """(raw share, corrected share) of a summary block, as table cells."""
    def bounds(v):  # None: too few photos (or minutes of video) for an interval
        return (f" {interval(v)}" if v else
                f" (too few {s.get('units', 'photos')} for an interval)")
    if not s["faces"]:
        return "no faces found", "-"
    raw = f"{s['raw_share']:.3f}" + (bounds(s["raw_interval"]) if "raw_interval" in s else "")
    corrected = ("-" if "interval" not in s or s["corrected_share"] is None
                 else f"{s['corrected_share']:.3f}{bounds(s['interval'])}")
    return raw, corrected


def shares_figure(summary):
    """Raw and corrected share of women, overall (the top row) and per folder, with the 95%
    intervals; the legend sits below the axes, clear of every point."""
    from matplotlib.figure import Figure
    rows = [{**summary, "group": "all faces"}] + summary.get("by_folder", [])
    rows = [r for r in rows if r["faces"]]  # no share to draw for no faces
    # Constrained layout keeps the legend, outside below the axes, clear of every point.
    fig = Figure(figsize=(7.0, 1.3 + 0.45 * len(rows)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows):
        raw = r.get("raw_interval")
        ax.errorbar(r["raw_share"], y + 0.12, xerr=None if not raw else
                    [[r["raw_share"] - raw[0]], [raw[1] - r["raw_share"]]],
                    fmt="o", color="#999999", label="called female (raw)" if y == ys[0] else None)
        if r.get("corrected_share") is not None:
            ax.errorbar(r["corrected_share"], y - 0.12, xerr=None if not r["interval"] else [
                [r["corrected_share"] - r["interval"][0]],
                [r["interval"][1] - r["corrected_share"]]], fmt="o", color="#c0392b",
                label="corrected, 95% interval" if y == ys[0] else None)
    ax.set_yticks(ys, [r["group"] for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    if len(rows) > 1:  # the overall row apart from the folders
        ax.axhline(ys[0] - 0.5, color="#cccccc", linewidth=0.8)
    ax.set_xlim(-0.03, 1.03)  # a point at 0 or 1 whole, not cut by the frame
    ax.set_xlabel("share of women")
    if rows:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2,
                   fontsize=8, frameon=False)
    return fig


def audit_context_table(c):
    """The audit's context (audit.context) as a table: what was audited, with what, when."""
    sample = c.get("audit_sample")
    model = c["model"]
    return table(["", "value"], [
        ["collection", "; ".join(c["inputs"])],
        ["labelled sample", "none (the model's sidecar rates, if any)" if not sample else
         f"{sample['folder']} ({sample['faces']} labelled faces)"],
        ["model", f"{model['path']}, " + (f"version {model['version']}" if model["version"]
                                          else "no version in its sidecar")
         + f", SHA-256 {model['sha256'][:16]}"],
        ["threshold", "-" if c["threshold"] is None else f"{c['threshold']:.2f}"],
        ["date", c["date"]],
        ["command", c["command"] or "-"]])


def colour_of(label):
    return "#%02x%02x%02x" % annotate.CLASS_COLOURS[label]


def timeline(strip):
    """One video as a strip over time: a row per track (video.timelines), its face, and a bar
    from its first to its last sampled face in its label's colour (dashed outline: its faces
    disagree), with its numbers as a tooltip."""
    span = max(strip["duration"], 1e-9)
    rows = []
    for t in strip["tracks"]:
        left = 100 * t["start"] / span
        width = max(100 * (t["end"] - t["start"]) / span, 0.3)
        words = (f"#{t['track']} {t['label']} (P(male) {t['p_male']:.3f}), "
                 f"{t['start']:.1f}-{t['end']:.1f} s, {t['faces']} faces"
                 + (f"; {t['note']}" if t["note"] else ""))
        thumb = (f'<img src="{image_uri(t["thumbnail"])}" alt="track {t["track"]}">'
                 if t.get("thumbnail") is not None else '<span class="nothumb"></span>')
        outline = ";outline:1px dashed #222" if t["disagreeing"] else ""
        rows.append(f'<div class="track" title="{esc(words)}">{thumb}<div class="lane">'
                    f'<span style="left:{left:.2f}%;width:{width:.2f}%;'
                    f'background:{colour_of(t["label"])}{outline}"></span></div></div>')
    more = (f'<p class="note">{strip["left_out"]} shorter tracks not shown</p>'
            if strip["left_out"] else "")
    return (f'<h3>{esc(os.path.basename(strip["path"]))}: {len(strip["tracks"])} tracks</h3>'
            f'<div class="timeline">{"".join(rows)}<div class="axis"><span>0 s</span>'
            f'<span>{strip["duration"]:.1f} s</span></div></div>{more}')


def videos_section(video, strips, counted):
    """The three counts (audit.video_denominators, as `counted`: audit.denominator_rows) and
    a timeline per video."""
    legend = ", ".join(f'<span style="color:{colour_of(n)}">{esc(n)}</span>'
                       for n in CLASS_NAMES)
    return (table(["video", "counted", "female", "male", "raw share [95%]",
                   "corrected [95%]"], counted)
            + f'<p class="note">{esc(video["assumption"])}. Each face stands for '
              f'{video["seconds_per_face"]:g} s.</p>'
            + f'<p class="note">One row per track, coloured by its label ({legend}); a '
              "dashed outline where its faces disagree; hover for its numbers.</p>"
            + "".join(timeline(s) for s in strips or []))


def audit_page(summary, tiles, timelines=None, video_rows=()):
    """predict.py's page: the audit summary (audit.summarize), gallery tiles (image, caption
    lines, kind) and, for videos, their timelines (video.timelines) and the table of their
    three counts (audit.denominator_rows)."""
    raw, corrected = share_cells(summary)
    faceless = summary.get("without_a_face", {"images": 0, "paths": []})
    numbers = table(["", "value"], [
        ["faces", summary["faces"] or "no faces found"],
        *[[f"called {name}", n] for name, n in summary["counts"].items()],
        ["share called female (raw count)", raw],
        ["share of women, corrected", corrected],
        ["images without a face found (scored whole, not counted)", faceless["images"]]])
    sections = []
    if "context" in summary:
        sections.append(("This audit", audit_context_table(summary["context"])))
    sections.append(("Numbers", numbers + f'<p class="note">{esc(summary["note"])}</p>'))
    if faceless["images"]:
        sections.append(("Not counted: no face found", '<p class="note">' + "<br>".join(
            esc(p) for p in faceless["paths"]) + "</p>"))
    if "by_folder" in summary:
        sections.append(("By folder", table(
            ["folder", "faces", "female", "male", "raw share [95%]", "corrected [95%]"],
            [[g["group"], g["faces"], g["counts"]["female"], g["counts"]["male"],
              *share_cells(g)] for g in summary["by_folder"]])))
    if "screen_time" in summary:
        st = summary["screen_time"]
        sections.append(("Screen time in the videos", table(["", "value"], [
            *[[f"{name}: seconds of faces on screen", f"{v:g}"]
              for name, v in st["face_seconds"].items()],
            ["share female (raw)", share_cells(st)[0]],
            ["share of women, corrected", share_cells(st)[1]]])
            + f'<p class="note">each face found in a frame sampled from the video stands for '
              f'{seconds(st["seconds_per_face"])} of screen time</p>'))
    if "video" in summary:
        sections.append(("Videos: faces, screen-seconds and tracks",
                         videos_section(summary["video"], timelines, video_rows)))
    if summary["faces"]:
        sections.append(("Figure", f'<div class="figures"><img style="max-width:700px" '
                                   f'src="{figure_uri(shares_figure(summary))}" alt="shares">'
                                   "</div>"))
    sections.append(("Faces as the model saw them", (
        '<p class="note">Solid red: mistakes on the labelled --audit_sample. Dashed orange: '
        f"the collection's faces nearest the threshold (within {UNSURE_BAND} of it), where the "
        "call is least sure. Each face is shown once.</p>")
        + gallery(tiles)))
    sections.append(("Method", f'<p class="note">{esc(summary["method"])}. '
                               f'{esc((summary["rates"] or {}).get("assumption", ""))}</p>'))
    return page("facegender audit of a collection", sections)


def write(path, document):
    write_text(path, document)
    return os.path.abspath(path)
