"""Auditing a collection: the share of its faces that are women's, corrected for the model's
errors (quantify.py), overall, per sub-folder of the input and, for videos, in screen time.

predict.py calls `choose_rates` before the work (which error rates correct the count: those
of `--audit_sample DIR`, a labelled sample of the user's own collection scored first, else the
counts in the model's sidecar) and `summarize` after it, on the CSV it wrote, so that every
engine gets the same summary. The summary is written beside the CSV as
`<output>.summary.json` and returned; `audit_text` puts it in words, which predict.py prints.
"""

import csv
import dataclasses
import logging
import math
import os

import numpy as np

from facegender.evaluation import quantify
from facegender.core.common import CLASS_NAMES, DataError, called
from facegender.core.outputs import write_json
from facegender.drawing.report import seconds

log = logging.getLogger(__name__)

# Faces in the same stretch of a video are mostly the same people in the same shot: the
# bootstrap resamples stretches this long, not single frames, so that a long shot of one
# person does not count as many independent faces.
VIDEO_BLOCK_SECONDS = 60.0
ASSUMPTION = "assumes the collection's faces are misread as often as the labelled ones"


@dataclasses.dataclass
class Rates:
    """Confusion counts on labelled faces (rows true female/male, columns called female/male)
    and where they come from, in words."""
    confusion: list
    source: str
    sample: list = dataclasses.field(default_factory=list)  # [(path, true, p_male)] scored


def summary_path(output):
    """predictions.csv -> predictions.summary.json."""
    return os.path.splitext(output)[0] + ".summary.json"


# ---------------------------------------------------------------------------
# Which rates

def sidecar_rates(model_path, threshold, tta):
    """(Rates from the sidecar's error_rates, None) or (None, why there are none usable):
    counts made at another threshold, or with(out) --tta, do not describe this run's calls."""
    from facegender.model import sidecar  # no TensorFlow: the scoring path may run without it
    record = sidecar.load_sidecar(model_path).get("error_rates")
    if record is None:
        return None, "the model's sidecar holds no error rates"
    if not math.isclose(record["threshold"], threshold, abs_tol=1e-9):
        return None, (f"the sidecar's error rates were counted at threshold "
                      f"{record['threshold']:.2f}, this run calls at {threshold:.2f}")
    if record.get("tta", False) != bool(tta):
        return None, "the sidecar's error rates were counted " + (
            "with" if record.get("tta") else "without") + " --tta, unlike this run"
    n = sum(map(sum, record["confusion_matrix"]))
    where = record.get("measured_on", "labelled faces")
    return Rates(record["confusion_matrix"],
                 f"the model's sidecar ({n} labelled faces: {where})"), None


def sample_rates(folder, runner, image_size, geometry, threshold, config):
    """Rates measured on `folder` (female/ and male/ images, one face each, a random sample of
    the collection labelled by a person): scored as predict.py scores face images."""
    from facegender.data import decoding, listing
    from facegender.runtime import inference
    paths, labels = listing.list_labeled_images(folder, required=())
    if config.verbose:  # so the progress below is not taken for the collection's
        log.info(f"scoring the audit sample: {len(paths)} labelled images in {folder}")
    found = decoding.main_faces(paths, geometry, config.cache_dir, config.verbose, config.backend)
    reader = decoding.ImageReader(image_size, geometry, found)
    scores, _ = inference.score_paths(runner, paths, image_size, config.batch_size,
                                      config.verbose, reader=reader, label="audit sample: ")
    keep = ~np.isnan(scores)
    labels, scores = np.asarray(labels)[keep], scores[keep]
    calls = called(scores, threshold)
    confusion = [[int(np.sum((labels == t) & (calls == c))) for c in (0, 1)] for t in (0, 1)]
    sample = [(p, CLASS_NAMES[y], float(s))
              for p, y, s in zip([p for p, k in zip(paths, keep) if k], labels, scores)]
    return Rates(confusion, f"--audit_sample {folder} ({len(labels)} labelled faces of this "
                            "collection)", sample)


def choose_rates(config, threshold, score_sample):
    """(Rates or None, one line saying which rates correct the count and what that assumes,
    or why there is no correction). `score_sample(folder)` scores --audit_sample's folder.

    A sample that cannot correct the count (one class only, a model that barely tells the
    classes apart on it) is a DataError: the user asked for its rates. Sidecar counts that
    cannot are a note, and the raw count is still given.
    """
    if config.audit_sample:
        rates = score_sample(config.audit_sample)
        why = quantify.uncorrectable(rates.confusion)
        if why:
            raise DataError(f"--audit_sample {config.audit_sample}: cannot correct the count: "
                            f"{why}; label more faces of both classes")
    else:
        rates, why = sidecar_rates(config.model_path, threshold, config.tta)
        if rates is None:
            return None, f"no correction: {why} (label a sample: --audit_sample DIR)"
        why = quantify.uncorrectable(rates.confusion)
        if why:
            return None, f"no correction with the sidecar's error rates: {why}"
    tpr, fpr = quantify.rates(rates.confusion)
    return rates, (f"error rates from {rates.source}: female recall {tpr:.3f}, male recall "
                   f"{1 - fpr:.3f}; {ASSUMPTION}")


# ---------------------------------------------------------------------------
# The summary

def group_of(path, inputs):
    """The sub-folder of the input that `path` was found in (its first level: a year, an
    outlet, a channel), prefixed by the input folder's name when there are several; files
    named on the command line are '(files)', a folder's own files '(top)'."""
    folders = [os.path.abspath(p) for p in inputs if os.path.isdir(p)]
    full = os.path.abspath(path)
    for folder in folders:
        if full.startswith(folder.rstrip(os.sep) + os.sep):
            parts = os.path.relpath(full, folder).split(os.sep)
            group = parts[0] if len(parts) > 1 else "(top)"
            return f"{os.path.basename(folder)}/{group}" if len(folders) > 1 else group
    return "(files)"


def read_rows(csv_path):
    # A file name that is not UTF-8 was written as its own bytes (outputs.write_text): read
    # back, it is the very path os.fsdecode gave.
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def counted_rows(rows):
    """(the rows that are faces, the rows of images in which no face was found): those are
    scored whole and listed, but they are not faces to count."""
    faces = [r for r in rows if r.get("face_found") != "false"]
    return faces, [r for r in rows if r.get("face_found") == "false"]


def units_of(rows):
    """What the bootstrap resamples for these rows, in words (photos, stretches of video)."""
    timed = [r.get("time") not in (None, "") for r in rows]
    video = "minutes of video"  # VIDEO_BLOCK_SECONDS each
    return video if timed and all(timed) else f"photos or {video}" if any(timed) else "photos"


def clusters_of(rows):
    """One value per row: faces that are not independent draws share it (a photo's faces;
    a video's faces within one VIDEO_BLOCK_SECONDS stretch). None when every row is its own."""
    keys = [(r["path"], math.floor(float(r["time"]) / VIDEO_BLOCK_SECONDS)
             if r.get("time") not in (None, "") else -1) for r in rows]
    ids = {}
    clusters = [ids.setdefault(k, len(ids)) for k in keys]
    return None if len(ids) == len(keys) else np.array(clusters)


def _share(rows, rates, seed=0):
    """The counts and shares of `rows` (faces); with no faces, every share is None (JSON
    null): there is no share of none."""
    called = np.array([r["label"] == CLASS_NAMES[0] for r in rows], dtype=bool)
    counts = {name: int(np.sum([r["label"] == name for r in rows])) for name in CLASS_NAMES}
    units = units_of(rows)
    if not len(rows):
        none = {"raw_share": None}
        if rates is not None:
            none.update(raw_interval=None, corrected_share=None, interval=None,
                        undefined_resamples=0)
        return {"faces": 0, "counts": counts, **none, "units": units}
    if rates is None:
        return {"faces": len(rows), "counts": counts, "raw_share": float(called.mean()),
                "units": units}
    r = quantify.corrected_share(called, rates.confusion, clusters_of(rows), seed=seed)
    # No interval (JSON null) for too few photos to bootstrap (quantify.MIN_UNITS).
    interval = None if math.isnan(r["interval"][0]) else r["interval"]
    raw_interval = None if math.isnan(r["raw_interval"][0]) else r["raw_interval"]
    return {"faces": len(rows), "counts": counts, "raw_share": r["raw_share"],
            "raw_interval": raw_interval, "corrected_share": finite(r["corrected_share"]),
            "interval": interval, "undefined_resamples": r["undefined_resamples"],
            "units": units}


def finite(value):
    """A number, or None for NaN (strict JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else value


def context(config, rates, threshold):
    """What an audit page or summary must say to stand on its own: the collection's folders,
    the labelled sample and its size, the model (file, version, SHA-256), the threshold, the
    date and the command line."""
    import datetime
    import hashlib
    from facegender.model import sidecar
    digest = hashlib.sha256()
    with open(config.model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sample = config.audit_sample
    return {
        "inputs": [os.path.abspath(p) for p in config.paths],
        "audit_sample": None if not sample else {
            "folder": os.path.abspath(sample),
            "faces": int(np.sum(rates.confusion)) if rates is not None else None},
        "model": {"path": os.path.abspath(config.model_path),
                  "version": sidecar.load_sidecar(config.model_path).get("version"),
                  "sha256": digest.hexdigest()},
        "threshold": threshold,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": config.command,
    }


def summarize(config, rates, note, every=None, threshold=None):
    """The audit of the CSV predict.py wrote (config.output): counts, the raw and corrected share
    of women with 95% intervals, the same per sub-folder of the input and, for video rows
    (a `time` column), face-seconds by label (each face found in a frame sampled every
    `every` seconds stands for that many seconds), and its context (context, at `threshold`).
    Rows of images without a face found are counted beside the faces, not among them.
    Written to summary_path (strict JSON: null where there is no number) and returned;
    audit_text puts it in words.
    """
    rows, faceless = counted_rows(read_rows(config.output))
    summary = {"csv": os.path.abspath(config.output), "unit": "faces",
               "context": context(config, rates, threshold),
               # Scored whole and written to the CSV (face_found false), but not faces.
               "without_a_face": {"images": len(faceless),
                                  "paths": [r["path"] for r in faceless],
                                  "note": "scored whole, not counted"},
               "rates": None if rates is None else {
                   "source": rates.source, "confusion_matrix": rates.confusion,
                   "female_recall": quantify.rates(rates.confusion)[0],
                   "male_recall": 1 - quantify.rates(rates.confusion)[1],
                   "assumption": ASSUMPTION},
               "note": note, "confidence": quantify.CONFIDENCE,
               "method": (f"adjusted classify-and-count (Forman 2008), percentile bootstrap, "
                          f"{quantify.N_RESAMPLES} resamples of the collection (by photo, or "
                          f"{VIDEO_BLOCK_SECONDS:g} s of video) and of the labelled faces"),
               **_share(rows, rates)}
    groups = {}
    for r in rows:
        groups.setdefault(group_of(r["path"], config.paths), []).append(r)
    if len(groups) > 1:
        summary["by_folder"] = [{"group": g, **_share(groups[g], rates)} for g in sorted(groups)]
    video_rows = [r for r in rows if r.get("time") not in (None, "")]
    if video_rows and every:
        summary["screen_time"] = {
            "seconds_per_face": every,
            "face_seconds": {name: every * sum(r["label"] == name for r in video_rows)
                             for name in CLASS_NAMES},
            **_share(video_rows, rates)}
    if video_rows and every and "track" in video_rows[0]:
        summary["video"] = video_denominators(video_rows, rates, every)
    write_json(summary_path(config.output), summary, strict=True)
    return summary


TRACK_ASSUMPTION = ("a track is one appearance (the same person in two shots is two tracks); "
                    "screen-seconds and tracks are called by their track's label and corrected "
                    "with the single faces' error rates, which assumes a track is misread as "
                    "often as one face (its label pools several, so it is usually misread less)")


def video_denominators(rows, rates, every):
    """The three counts of a video audit, over all videos and per video: face detections (each
    face by its own label), screen-seconds (each face stands for `every` seconds, called by its
    track's label) and tracks (appearances, video.track_table), each with `_share`'s raw and
    corrected shares."""
    from facegender.labelling import video
    table = video.track_table(rows, every)

    def three(rows, table):
        label = {(t["path"], t["track"]): t["label"] for t in table}
        seconds = _share([{**r, "label": label[r["path"], int(r["track"])]} for r in rows],
                         rates)
        seconds["seconds"] = {name: every * n for name, n in seconds["counts"].items()}
        tracks = _share([{"path": t["path"], "time": t["start"], "label": t["label"]}
                         for t in table], rates)
        tracks["tracks"] = tracks.pop("faces")
        tracks["disagreeing"] = sum(t["disagreeing"] > 0 for t in table)
        return {"faces": _share(rows, rates), "screen_seconds": seconds, "tracks": tracks}

    paths = list(dict.fromkeys(r["path"] for r in rows))
    return {"seconds_per_face": every, "assumption": TRACK_ASSUMPTION,
            "all": three(rows, table),
            "by_video": [{"path": p, **three([r for r in rows if r["path"] == p],
                                             [t for t in table if t["path"] == p])}
                         for p in paths]}


def _cells(s):
    def interval(v):
        return (f" [{v[0]:.3f}, {v[1]:.3f}]" if v else
                f" [n/a: < {quantify.MIN_UNITS} {s.get('units', 'photos')}]")
    if s.get("raw_share") is None:  # no faces (tracks, seconds) to share
        return "no faces found", "-"
    raw = f"{s['raw_share']:.3f}"
    if "raw_interval" in s:
        raw += interval(s["raw_interval"])
    corrected = ("-" if "interval" not in s else "n/a (the recalls cannot correct it)"
                 if s["corrected_share"] is None else
                 f"{s['corrected_share']:.3f}" + interval(s["interval"]))
    return raw, corrected


def audit_text(summary):
    """The audit's summary (summarize's dict) in words: the share of women among the faces,
    raw and corrected with its interval, which rates correct it, the table by folder, the screen
    time and the videos' three counts; then the summary file written. Starts with an empty
    line, to stand apart from what is above it."""
    if summary["faces"]:
        lines = [f"\n== share of women among the {summary['faces']} faces"]
    else:
        lines = ["\n== no faces found: there is no share of women to give"]
    faceless = summary.get("without_a_face", {}).get("images")
    if faceless:
        lines.append(f"{faceless} image(s) without a face found: scored whole, not counted")
    lines.append(summary["note"])
    raw, corrected = _cells(summary)
    lines.append(f"  called female (the raw count, biased wherever the two recalls differ): "
                 f"{raw}")
    if summary["rates"]:
        lines.append(f"  corrected share of women, {summary['confidence']:.0%} interval: "
                     f"{corrected}")
    if "by_folder" in summary:
        width = max(12, *(len(g["group"]) for g in summary["by_folder"]))
        lines.append(f"\n{'folder':<{width}} {'faces':>6} {'female':>6} "
                     f"{'raw share [95%]':>22} {'corrected [95%]':>22}")
        for g in summary["by_folder"]:
            raw, corrected = _cells(g)
            lines.append(f"{g['group']:<{width}} {g['faces']:>6} {g['counts']['female']:>6} "
                         f"{raw:>22} {corrected:>22}")
    if "screen_time" in summary:
        st = summary["screen_time"]
        raw, corrected = _cells(st)
        on_screen = ", ".join(f"{seconds(v)} {k}" for k, v in st["face_seconds"].items())
        lines.append(f"\nscreen time in the videos (each face found in a sampled frame stands "
                     f"for {seconds(st['seconds_per_face'])}): {on_screen}; share female {raw}"
                     + (f", corrected {corrected}" if "interval" in st else ""))
    if "video" in summary:
        lines.append(video_denominators_text(summary["video"]))
    lines.append(f"wrote {summary_path(summary['csv'])}")
    return "\n".join(lines)


DENOMINATORS = (("faces", "face detections"), ("screen_seconds", "screen-seconds"),
                ("tracks", "tracks"))


def denominator_rows(video):
    """[video, what is counted, female, male, raw share [95%], corrected [95%]] rows: all
    videos' three counts, then each video's."""
    table = []
    for name, counts in [("all videos", video["all"]),
                         *((os.path.basename(v["path"]), v) for v in video["by_video"])]:
        for key, words in DENOMINATORS:
            s = counts[key]
            n = s["seconds"] if key == "screen_seconds" else s["counts"]
            table.append([name, words, *(f"{n[c]:g}" for c in CLASS_NAMES), *_cells(s)])
    return table


def video_denominators_text(video):
    """The videos' three counts (denominator_rows) as a table under its assumption."""
    rows = denominator_rows(video)
    width = max(12, *(len(r[0]) for r in rows))
    return "\n".join([f"\nvideos, counted three ways: {video['assumption']}",
                      f"{'video':<{width}} {'counted':<16} {'female':>7} {'male':>7} "
                      f"{'raw share [95%]':>22} {'corrected [95%]':>22}",
                      *(f"{r[0]:<{width}} {r[1]:<16} {r[2]:>7} {r[3]:>7} {r[4]:>22} {r[5]:>22}"
                        for r in rows)])
