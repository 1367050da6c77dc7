"""Evaluating a saved model on labelled folders (what test_script.py runs, from an EvalConfig):
scores at the model's own threshold (from its JSON sidecar) and at the threshold that gives the
best macro-F1 on this data; the confusion matrix, ROC, precision-recall and reliability curves,
metrics and per-image predictions; every misclassified image copied into misclassified/ with a
Grad-CAM contact sheet of the worst mistakes. A data folder with an attributes.csv (age,
origin, ...) also gets every class's recall and the macro-F1 per value of each attribute, with
95% intervals: the model card's factors (factors).

`evaluate` returns an `Evaluation` and prints nothing: what it is doing goes to this module's
logger, and facegender.evaluation.summary turns the result into the text test_script.py prints.
"""

import dataclasses
import json
import logging
import os
import shutil

import numpy as np

from facegender.core.common import CLASS_NAMES, DataError, called
from facegender.core.outputs import atomic_path, make_writable_dir, write_csv, write_json
from facegender.data import decoding, listing
from facegender.drawing import plots
from facegender.evaluation import curves, factors, gradcam, metrics
from facegender.model import sidecar
from facegender.runtime import inference

log = logging.getLogger(__name__)

# The per-image CSV: a name of its own, so that an evaluation in the folder where predict.py
# wrote predictions.csv (and its summary, which points at it) never writes over it.
EVALUATION_CSV = "evaluation.csv"
# Which files in misclassified/ the last run copied there: the next run replaces them, and
# touches nothing else in the folder.
COPIES_RECORD = ".copies.json"


# ---------------------------------------------------------------------------
# Grouping and copying

def group_of(path, class_root, group_by):
    """The group a file belongs to: its name's last `_suffix`, or its sub-folder in the class."""
    if group_by == "suffix":
        stem = os.path.splitext(os.path.basename(path))[0]
        return stem.rsplit("_", 1)[1] if "_" in stem else "(none)"
    rel = os.path.relpath(os.path.dirname(path), class_root)
    return "(top)" if rel == "." else rel.split(os.sep)[0]


def copy_misclassified(path, true_name, pred_name, p_male, out_root):
    """Copy (never move) `path` into out_root/<true>_as_<pred>/, never overwriting a file.

    The copy is named after the file's base name only, so names from the data cannot escape
    `out_root`, with P(male) added so the folder sorts by confidence.
    """
    folder = os.path.join(out_root, f"{true_name}_as_{pred_name}")
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    candidate, n = f"{stem}_p{p_male:.3f}{ext}", 1
    while os.path.exists(os.path.join(folder, candidate)):
        candidate, n = f"{stem}_p{p_male:.3f}_{n}{ext}", n + 1
    dest = os.path.join(folder, candidate)
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)
    return dest


def remove_earlier_copies(out_root):
    """Remove the files an earlier run recorded in out_root/COPIES_RECORD (its copies and its
    contact sheet), so this run's copies replace them instead of piling up beside them as
    `_1` copies. A file the record does not name (one of the user's) is never touched."""
    record = os.path.join(out_root, COPIES_RECORD)
    try:
        with open(record) as f:
            names = json.load(f)["files"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning(f"warning: {record} is unreadable ({err}); the earlier copies are left as "
                    "they are")
        return 0
    removed = 0
    root = os.path.realpath(out_root)
    for name in names:
        path = os.path.realpath(os.path.join(out_root, str(name)))
        # A record edited to name a file outside the folder is not followed there.
        if path.startswith(root + os.sep) and os.path.isfile(path):
            os.remove(path)
            removed += 1
    os.remove(record)
    return removed


def record_copies(out_root, paths):
    """Write out_root/COPIES_RECORD: the files this run put in out_root."""
    write_json(os.path.join(out_root, COPIES_RECORD),
               {"files": sorted(os.path.relpath(p, out_root) for p in paths)})


# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Scored:
    """The images of an evaluation that decoded, with their labels and scores, and how they
    were scored. Lists run parallel to `paths`."""
    paths: list
    labels: np.ndarray
    scores: np.ndarray
    source_of: list  # each image's source name
    class_roots: list  # each image's class folder (for --group_by folder)
    unreadable: dict  # {path: why} of the files that did not decode
    no_face: list  # images in which no face was found, scored as given
    backend: str
    geometry: object  # the sidecar's faces.Geometry, or None: images as given
    reader: decoding.ImageReader
    threshold: float  # the model's
    threshold_source: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluation:
    """What `evaluate` found and wrote. The reports and tables are the dicts metrics.json holds
    (facegender.evaluation.summary turns them into text); a table the run did not make is
    None."""
    metrics: dict  # metrics.json's content: everything below that it holds, and the curves
    model_threshold: dict  # metrics.evaluation_report at the model's threshold, with its source
    best_threshold: dict  # metrics.evaluation_report at the best macro-F1 threshold
    sources: dict | None  # {"threshold", "rows"}: a group_table per source, for several
    groups: dict | None  # {"by", "threshold", "rows"}: a group_table per --group_by group
    factors: dict | None  # factors.factor_record: the tables per attribute value
    images: int  # images scored (the unreadable ones are not)
    unreadable: dict  # {path: why} of the files that did not decode
    face_geometry: dict | None  # the crop the model was fed; None: images as given
    no_face: list  # images in which no face was found, scored as given
    misclassified: int  # mistakes at the model's threshold
    copies_dir: str | None  # where the mistakes were copied; None with --no_copy
    copies: tuple  # the copies made there
    replaced: int  # files of the earlier run's copies removed from copies_dir
    contact_sheet: dict | None  # gradcam.misclassified_sheet's {"path", "shown", ...}
    output_dir: str  # absolute
    written: tuple  # the names of the figures, metrics.json and evaluation.csv in output_dir
    report_page: str | None  # the --report page written
    error_rates: dict | None  # the --store_error_rates record stored in the sidecar
    error_rates_path: str | None  # the sidecar it was stored in


def evaluate(config):
    """Evaluate the model of an EvalConfig on its data folders: write every output into
    config.output_dir and return an `Evaluation`; print nothing (summary.summary is its text).
    What it is doing is logged (INFO), as are the notes and warnings."""
    sources = listing.find_sources(config.data_path)
    source_attributes = factors.read_source_attributes(sources)
    # Fail on an unwritable output folder now, not after minutes of predicting.
    make_writable_dir(config.output_dir)
    listed, scored = score_sources(config, sources)
    results = tables(config, scored, len(sources), source_attributes, listed)
    written = write_outputs(config, scored, results)
    mistakes = copy_mistakes(config, scored)
    page = None
    if config.report:
        from facegender.drawing import report
        page = report.write(config.report, report.evaluation_page(
            results, config.output_dir, scored.paths, scored.labels, scored.scores,
            lambda i: scored.reader(scored.paths[i])[0]))
    rates, rates_path = None, None
    if config.store_error_rates:
        rates, rates_path = store_error_rates(config, results["model_threshold"],
                                              len(scored.paths), [name for name, _ in sources])
    return Evaluation(
        metrics=results, model_threshold=results["model_threshold"],
        best_threshold=results["best_threshold"], sources=results.get("sources"),
        groups=results.get("groups"), factors=results.get("factors"),
        images=len(scored.paths), unreadable=scored.unreadable,
        face_geometry=results["face_geometry"], no_face=scored.no_face, **mistakes,
        output_dir=os.path.abspath(config.output_dir), written=written, report_page=page,
        error_rates=rates, error_rates_path=rates_path)


def list_sources(config, sources):
    """(listed, paths, labels, source_of, class_roots) of every labelled image of `sources`.
    Evaluation takes whichever classes are there; an output folder inside the data is skipped,
    so a second run never reads the first run's misclassified copies back as data."""
    paths, labels, source_of, class_roots, listed = [], [], [], [], {}
    for name, folder in sources:
        class_dirs = listing.find_class_dirs(folder, required=())
        p, y = listing.list_labeled_images(folder, required=(), exclude=[config.output_dir])
        listed[name] = p
        paths += p
        labels.append(y)
        source_of += [name] * len(p)
        class_roots += [class_dirs[CLASS_NAMES[k]] for k in y]
    return listed, paths, np.concatenate(labels), source_of, class_roots


def score_sources(config, sources):
    """(listed, Scored): every image of `sources` scored by the model, the unreadable ones set
    aside."""
    listed, paths, labels, source_of, class_roots = list_sources(config, sources)
    inference.check_backend(config.backend, config.precision)
    model_threshold, source = sidecar.decision_threshold(config.model_path, config.threshold)
    runner, image_size = inference.load_runner(config.model_path, config.backend,
                                               config.precision, config.cache_dir,
                                               model_threshold, config.tta, not config.unsafe)
    # The model is fed the faces it was trained on: its sidecar's geometry, or as given.
    geometry = sidecar.face_geometry(config.model_path)
    found = decoding.main_faces(paths, geometry, config.cache_dir, config.verbose, config.backend)
    reader = decoding.ImageReader(image_size, geometry, found)
    log.info(f"evaluating {len(paths)} images ({np.sum(labels == 0)} female, "
             f"{np.sum(labels == 1)} male) at {image_size}x{image_size} on {runner.name}"
             + (f", from {len(sources)} sources" if len(sources) > 1 else "")
             + f"; face crop: {geometry or 'as given (the model names no face geometry)'}")
    scores, unreadable = inference.score_paths(runner, paths, image_size, config.batch_size,
                                               config.verbose, reader=reader)
    backend = runner.name
    # Its compiled models are done with: let them go before the Grad-CAM model is compiled,
    # so the mistakes' sheet costs what it shows, not a second copy of the network.
    del runner
    no_face = decoding.faceless(paths, found, unreadable)
    keep = ~np.isnan(scores)  # an unreadable file has no score
    if not np.any(keep):
        raise DataError(f"{' '.join(config.data_path)}: none of the images could be read")
    missing = [name for k, name in enumerate(CLASS_NAMES) if not np.any(labels[keep] == k)]
    if missing and config.store_error_rates:  # refused before anything is written
        raise DataError(f"--store_error_rates: no {' or '.join(missing)} images in "
                        f"{' '.join(config.data_path)}; the rates need both classes")
    if missing:
        log.info(f"note: no {' or '.join(missing)} images here; "
                 "the report covers the other class only")

    def kept(values):
        return [v for v, k in zip(values, keep) if k]

    return listed, Scored(kept(paths), labels[keep], scores[keep], kept(source_of),
                          kept(class_roots), unreadable, no_face, backend, geometry, reader,
                          model_threshold, source)


def tables(config, scored, n_sources, source_attributes, listed):
    """The reports at the model's threshold and at the best one, and the tables per source,
    per --group_by group and per attribute value, as metrics.json's results."""
    labels, scores, threshold = scored.labels, scored.scores, scored.threshold
    at_model = metrics.evaluation_report(labels, scores, threshold)
    best_t, _ = metrics.best_threshold(labels, scores)
    at_best = metrics.evaluation_report(labels, scores, best_t)
    thresholds, curve = metrics.sweep_thresholds(labels, scores)
    results = {
        "data_path": [os.path.abspath(p) for p in config.data_path],
        "model_path": os.path.abspath(config.model_path),
        "images": len(scored.paths),
        "model_threshold": {**at_model, "source": scored.threshold_source},
        "best_threshold": at_best,
        "sweep": [{"threshold": float(t), "macro_f1": float(f)} for t, f in zip(thresholds, curve)],
        "backend": scored.backend,
        "unreadable_images": scored.unreadable,
        "face_geometry": scored.geometry and scored.geometry.to_dict(),
        # Images in which no face was found, scored as given.
        "images_without_a_face": scored.no_face,
    }
    if n_sources > 1:
        rows = metrics.group_table(scored.source_of, labels, scores, threshold)
        results["sources"] = {"threshold": threshold, "rows": rows}
    if config.group_by:
        groups = [group_of(p, root, config.group_by)
                  for p, root in zip(scored.paths, scored.class_roots)]
        if n_sources > 1:
            groups = [f"{s} {g}" for s, g in zip(scored.source_of, groups)]
        rows = metrics.group_table(groups, labels, scores, threshold)
        results["groups"] = {"by": config.group_by, "threshold": threshold, "rows": rows}
    if source_attributes:
        found = factors.factor_tables(source_attributes, listed, scored.paths, scored.source_of,
                                      labels, scores, threshold)
        results["factors"] = factors.factor_record(found, threshold)
    return results


def write_outputs(config, scored, results):
    """evaluation.csv, metrics.json (with the curves' numbers) and the figures; returns the
    names of the files written, the figures first."""
    out = config.output_dir
    predicted = (scored.scores >= scored.threshold).astype(int)
    rows = [(p, CLASS_NAMES[y], f"{s:.6f}", CLASS_NAMES[k], int(y == k))
            for p, y, s, k in zip(scored.paths, scored.labels, scored.scores, predicted)]
    write_csv(os.path.join(out, EVALUATION_CSV),
              ["path", "true", "p_male", "predicted", "correct"], rows)
    # ROC, precision-recall and reliability PNGs; their numbers (AUC, AP, ECE) go in metrics.json.
    results["curves"] = curves.save_curves(scored.labels, scored.scores, scored.threshold,
                                                out)
    write_json(os.path.join(out, "metrics.json"), results)
    plots.save(plots.confusion_matrix_figure(results["model_threshold"]["confusion_matrix"],
                                             scored.threshold),
               os.path.join(out, "confusion_matrix.png"))
    pictures = ["confusion_matrix.png", *results["curves"]["files"]]
    panels = factors.age_panels(results.get("factors", {}).get("tables", []))
    if panels:
        plots.save(plots.recall_by_age_figure(panels), os.path.join(out, "recall_by_age.png"))
        pictures.append("recall_by_age.png")
    return (*pictures, "metrics.json", EVALUATION_CSV)


def copy_mistakes(config, scored):
    """The misclassified images copied out (unless --no_copy), replacing the earlier run's
    copies, with their Grad-CAM sheet: Evaluation's misclassified, copies_dir, copies,
    replaced and contact_sheet."""
    threshold, paths, labels, scores = scored.threshold, scored.paths, scored.labels, scored.scores
    predicted = called(scores, threshold)
    wrong = np.flatnonzero(predicted != labels)
    mistakes = {"misclassified": len(wrong), "copies_dir": None, "copies": (), "replaced": 0,
             "contact_sheet": None}
    if config.no_copy:
        return mistakes
    copies_root = os.path.join(config.output_dir, "misclassified")
    replaced = remove_earlier_copies(copies_root)
    copies = [copy_misclassified(paths[i], CLASS_NAMES[labels[i]], CLASS_NAMES[predicted[i]],
                                 scores[i], copies_root)
              for i in wrong]
    if copies or replaced:
        record_copies(copies_root, copies)
    mistakes.update(copies_dir=copies_root, copies=tuple(copies), replaced=replaced)
    if len(wrong):
        explain = gradcam.grad_cam_for(config.model_path, config.cache_dir, config.backend,
                                       not config.unsafe)
        sheet = gradcam.misclassified_sheet(
            explain, paths, labels, scores, threshold,
            os.path.join(copies_root, "contact_sheet.png"), reader=scored.reader)
        record_copies(copies_root, copies + [sheet["path"]])
        mistakes["contact_sheet"] = sheet
    return mistakes


def store_error_rates(config, at_model, images, source_names):
    """--store_error_rates: this data's confusion counts at the model's threshold, into the
    model's sidecar, for predict.py's corrected share (audit.py); both classes are there
    (score_sources refuses the run otherwise). Returns (the record, the sidecar's path)."""
    record = {"confusion_matrix": at_model["confusion_matrix"], "threshold": at_model["threshold"],
              "tta": bool(config.tta), "images": images, "measured_on": ", ".join(source_names)}
    return record, sidecar.store_error_rates(config.model_path, record)
