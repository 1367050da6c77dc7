"""Evaluating a saved model on labelled folders (what test_script.py runs, from an EvalConfig):
scores at the model's own threshold (from its JSON sidecar) and at the threshold that gives the
best macro-F1 on this data; the confusion matrix, ROC, precision-recall and reliability curves,
metrics and per-image predictions; every misclassified image copied into misclassified/ with a
Grad-CAM contact sheet of the worst mistakes. A data folder with an attributes.csv (age,
origin, ...) also gets every class's recall and the macro-F1 per value of each attribute, with
95% intervals: the model card's factors.
"""

import dataclasses
import json
import os
import shutil
import sys

import numpy as np

from facegender.core.common import CLASS_NAMES, DataError
from facegender.core.outputs import atomic_path, make_writable_dir, write_csv, write_json
from facegender.data import attributes
from facegender.data import images as data
from facegender.drawing import plots
from facegender.evaluation import curves, gradcam, metrics
from facegender.model import sidecar
from facegender.runtime import inference

NO_FACE_SHOWN = 10  # images without a face named on the terminal (metrics.json has them all)
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
        print(f"warning: {record} is unreadable ({err}); the earlier copies are left as they "
              "are", file=sys.stderr)
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
# Outputs

def print_report(title, report):
    print(f"\n== {title}: threshold {report['threshold']:.2f}, "
          f"macro-F1 {report['macro_f1']:.4f}")
    print(report["report_text"])
    for name, (ok, n) in report["per_class_accuracy"].items():
        share = f" ({ok / n:.2%})" if n else ""
        print(f"  {name:>6} accuracy: {ok}/{n}{share}")


def print_group_table(rows, group_by, threshold):
    """A table of metrics.group_table rows; factor_table rows add each cell's interval."""
    print(f"\n== by {group_by}, at threshold {threshold:.2f}")
    intervals = "macro_f1_interval" in rows[0]

    def span(bounds):
        return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if intervals else ""

    width = max([12] + [len(str(r["group"])) for r in rows])
    f1_width, recall_width = (21, 28) if intervals else (9, 17)
    # Balanced accuracy: the mean of the two recalls, whatever the group's share of men; ROC
    # AUC: the ranking within the group, whatever the threshold ("-" for one class).
    print(f"{'group':<{width}} {'images':>6} {'macro-F1':>{f1_width}} "
          f"{'female recall':>{recall_width}} {'male recall':>{recall_width}} "
          f"{'bal. acc.':>9} {'ROC AUC':>8}")
    for r in rows:
        cells = [f"{ok}/{n} {ok / n:.3f}" + span(r.get(f"{name}_recall_interval")) if n else "-"
                 for name, (ok, n) in ((name, r[name]) for name in CLASS_NAMES)]
        f1 = f"{r['macro_f1']:.4f}" + span(r.get("macro_f1_interval"))
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
        balanced = "-" if r.get("balanced_accuracy") is None else f"{r['balanced_accuracy']:.4f}"
        print(f"{r['group']:<{width}} {r['images']:>6} {f1:>{f1_width}} "
              f"{cells[0]:>{recall_width}} {cells[1]:>{recall_width}} {balanced:>9} {auc:>8}")


# ---------------------------------------------------------------------------
# Factors: metrics per attribute value, from each data folder's attributes.csv

FACTOR_RESAMPLES = 1000  # bootstrap resamples for the macro-F1 intervals
FACTOR_CONFIDENCE = 0.95


def read_source_attributes(sources):
    """{source name: (attribute table, columns, csv path)} for each source folder that has an
    attributes.csv. Read before anything is written or run, so that a malformed file stops
    the run with one line and no output."""
    found = {}
    for name, folder in sources:
        table, columns = attributes.read_attributes(folder)
        if columns:
            found[name] = (table, columns, attributes.attributes_file(folder))
    return found


def factor_tables(source_attributes, listed, paths, source_of, labels, scores, threshold):
    """One metrics.factor_table per (source, attribute), as plain values for metrics.json.

    `listed` is every image path found, readable or not: a row that names none of them is
    counted, since it usually means the paths in the file are written differently.
    """
    tables = []
    source_of = np.asarray(source_of)
    for name, (table, columns, csv_path) in source_attributes.items():
        mine = source_of == name
        my_paths = [p for p, m in zip(paths, mine) if m]
        unmatched = len(table) - sum(os.path.normpath(p) in table for p in listed[name])
        for column in columns:
            values = attributes.attribute_values(table, my_paths, column)
            rows = metrics.factor_table(values, labels[mine], scores[mine], threshold,
                                        order=attributes.band_order,
                                        n_resamples=FACTOR_RESAMPLES,
                                        confidence=FACTOR_CONFIDENCE)
            tables.append({"source": name, "attribute": column,
                           "file": os.path.abspath(csv_path),
                           "rows_without_image": unmatched, "rows": rows})
    return tables


def print_factor_tables(tables, threshold):
    print(f"\n== factors: {FACTOR_CONFIDENCE:.0%} intervals, Wilson for recall, percentile "
          f"bootstrap ({FACTOR_RESAMPLES} resamples) for macro-F1")
    for t in tables:
        print_group_table(t["rows"], f"{t['attribute']} ({t['source']})", threshold)
    for t in {t["file"]: t for t in tables}.values():
        if t["rows_without_image"]:
            print(f"note: {t['rows_without_image']} row(s) of {t['file']} name no image found "
                  "there")


def age_panels(tables):
    """(title, rows) for every attribute that is age, one per source, for recall_by_age.png."""
    return [(f"Recall by age band, {t['source']}", t["rows"]) for t in tables
            if t["attribute"].lower() == attributes.AGE_COLUMN]


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
    reader: data.ImageReader
    threshold: float  # the model's
    threshold_source: str


def evaluate(config):
    """Evaluate the model of an EvalConfig on its data folders: print the reports and write
    every output into config.output_dir; returns the results that metrics.json holds."""
    sources = data.find_sources(config.data_path)
    source_attributes = read_source_attributes(sources)
    # Fail on an unwritable output folder now, not after minutes of predicting.
    make_writable_dir(config.output_dir)
    listed, scored = score_sources(config, sources)
    results = tables(config, scored, len(sources), source_attributes, listed)
    pictures = write_outputs(config, scored, results)
    report_mistakes(config, scored, results, pictures)
    if config.store_error_rates:
        store_error_rates(config, results["model_threshold"], len(scored.paths),
                          [name for name, _ in sources])
    return results


def list_sources(config, sources):
    """(listed, paths, labels, source_of, class_roots) of every labelled image of `sources`.
    Evaluation takes whichever classes are there; an output folder inside the data is skipped,
    so a second run never reads the first run's misclassified copies back as data."""
    paths, labels, source_of, class_roots, listed = [], [], [], [], {}
    for name, folder in sources:
        class_dirs = data.find_class_dirs(folder, required=())
        p, y = data.list_labeled_images(folder, required=(), exclude=[config.output_dir])
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
    found = data.main_faces(paths, geometry, config.cache_dir, config.verbose, config.backend)
    reader = data.ImageReader(image_size, geometry, found)
    print(f"evaluating {len(paths)} images ({np.sum(labels == 0)} female, "
          f"{np.sum(labels == 1)} male) at {image_size}x{image_size} on {runner.name}"
          + (f", from {len(sources)} sources" if len(sources) > 1 else "")
          + f"; face crop: {geometry or 'as given (the model names no face geometry)'}")
    scores, unreadable = inference.score_paths(runner, paths, image_size, config.batch_size,
                                               config.verbose, reader=reader)
    backend = runner.name
    # Its compiled models are done with: let them go before the Grad-CAM model is compiled,
    # so the mistakes' sheet costs what it shows, not a second copy of the network.
    del runner
    no_face = data.faceless(paths, found, unreadable)
    keep = ~np.isnan(scores)  # an unreadable file has no score
    if not np.any(keep):
        raise DataError(f"{' '.join(config.data_path)}: none of the images could be read")
    missing = [name for k, name in enumerate(CLASS_NAMES) if not np.any(labels[keep] == k)]
    if missing:
        print(f"note: no {' or '.join(missing)} images here; "
              "the report covers the other class only")

    def kept(values):
        return [v for v, k in zip(values, keep) if k]

    return listed, Scored(kept(paths), labels[keep], scores[keep], kept(source_of),
                          kept(class_roots), unreadable, no_face, backend, geometry, reader,
                          model_threshold, source)


def tables(config, scored, n_sources, source_attributes, listed):
    """The reports at the model's threshold and at the best one, and the tables per source,
    per --group_by group and per attribute value, printed; returns them as metrics.json's
    results."""
    labels, scores, threshold = scored.labels, scored.scores, scored.threshold
    at_model = metrics.evaluation_report(labels, scores, threshold)
    best_t, _ = metrics.best_threshold(labels, scores)
    at_best = metrics.evaluation_report(labels, scores, best_t)
    thresholds, curve = metrics.sweep_thresholds(labels, scores)
    print_report(f"At the model's threshold ({scored.threshold_source})", at_model)
    print_report("At the best threshold for this data (swept in 0.01 steps; optimistic, "
                 "since it is tuned on the data it scores)", at_best)
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
        print_group_table(rows, "source", threshold)
        worst = min(rows, key=lambda r: r["macro_f1"])
        print(f"worst source: {worst['group']} (macro-F1 {worst['macro_f1']:.4f})")
        results["sources"] = {"threshold": threshold, "rows": rows}
    if config.group_by:
        groups = [group_of(p, root, config.group_by)
                  for p, root in zip(scored.paths, scored.class_roots)]
        if n_sources > 1:
            groups = [f"{s} {g}" for s, g in zip(scored.source_of, groups)]
        rows = metrics.group_table(groups, labels, scores, threshold)
        print_group_table(rows, config.group_by, threshold)
        results["groups"] = {"by": config.group_by, "threshold": threshold, "rows": rows}
    if source_attributes:
        found = factor_tables(source_attributes, listed, scored.paths, scored.source_of, labels,
                              scores, threshold)
        print_factor_tables(found, threshold)
        results["factors"] = {
            "threshold": threshold, "confidence": FACTOR_CONFIDENCE,
            "recall_interval": "Wilson score",
            "macro_f1_interval": f"percentile bootstrap, {FACTOR_RESAMPLES} resamples, seed 0",
            "tables": found}
    return results


def write_outputs(config, scored, results):
    """evaluation.csv, metrics.json (with the curves' numbers) and the figures; returns the
    figures' file names."""
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
    panels = age_panels(results.get("factors", {}).get("tables", []))
    if panels:
        plots.save(plots.recall_by_age_figure(panels), os.path.join(out, "recall_by_age.png"))
        pictures.append("recall_by_age.png")
    return pictures


def report_mistakes(config, scored, results, pictures):
    """The misclassified images copied out with their Grad-CAM sheet, what was skipped or had
    no face, and the --report page; printed as they are written."""
    out, threshold = config.output_dir, scored.threshold
    paths, labels, scores = scored.paths, scored.labels, scored.scores
    predicted = (scores >= threshold).astype(int)
    wrong = np.flatnonzero(predicted != labels)
    copies_root = os.path.join(out, "misclassified")
    copies, replaced = [], 0
    if not config.no_copy:
        replaced = remove_earlier_copies(copies_root)
        copies = [copy_misclassified(paths[i], CLASS_NAMES[labels[i]],
                                     CLASS_NAMES[predicted[i]], scores[i], copies_root)
                  for i in wrong]
        if copies or replaced:
            record_copies(copies_root, copies)
    print(f"\n{len(wrong)} misclassified at threshold {threshold:.2f}"
          + ("" if config.no_copy else f", copied into {copies_root}")
          + (f" (replacing the earlier run's {replaced} file(s) there)" if replaced else ""))
    if not config.no_copy and len(wrong):
        explain = gradcam.grad_cam_for(config.model_path, config.cache_dir, config.backend,
                                       not config.unsafe)
        sheet = gradcam.misclassified_sheet(
            explain, paths, labels, scores, threshold,
            os.path.join(copies_root, "contact_sheet.png"), reader=scored.reader)
        record_copies(copies_root, copies + [sheet["path"]])
        print(f"contact sheet of the {sheet['shown']} most confident mistakes"
              + (f" ({sheet['left_out']} left out)" if sheet["left_out"] else "")
              + f": {sheet['path']}" + (f"; {sheet['note']}" if sheet["note"] else ""))
    print_left_out(scored)
    print(f"wrote {', '.join(pictures)}, metrics.json, {EVALUATION_CSV} in {os.path.abspath(out)}")
    if config.report:
        from facegender.drawing import report
        page = report.evaluation_page(results, out, paths, labels, scores,
                                      lambda i: scored.reader(paths[i])[0])
        print(f"wrote {report.write(config.report, page)}")


def print_left_out(scored):
    """The unreadable images, and the images without a face (the first NO_FACE_SHOWN)."""
    if scored.unreadable:
        print(f"skipped {len(scored.unreadable)} unreadable image(s):")
        for p, why in scored.unreadable.items():
            print(f"  {p}: {why}")
    if scored.geometry is not None:
        no_face = scored.no_face
        print(f"no face found in {len(no_face)} of {len(scored.paths)} images, scored as given"
              + (" (all listed in metrics.json, images_without_a_face)" if no_face else ""))
        for p in no_face[:NO_FACE_SHOWN]:
            print(f"  {p}")
        if len(no_face) > NO_FACE_SHOWN:
            print(f"  ... and {len(no_face) - NO_FACE_SHOWN} more")


def store_error_rates(config, at_model, images, source_names):
    """--store_error_rates: this data's confusion counts at the model's threshold, into the
    model's sidecar, for predict.py's corrected share (audit.py)."""
    if missing := [n for n, (_, total) in at_model["per_class_accuracy"].items() if not total]:
        raise DataError(f"--store_error_rates: no {' or '.join(missing)} images in "
                        f"{' '.join(config.data_path)}; the rates need both classes")
    path = sidecar.store_error_rates(config.model_path, {
        "confusion_matrix": at_model["confusion_matrix"], "threshold": at_model["threshold"],
        "tta": bool(config.tta), "images": images, "measured_on": ", ".join(source_names)})
    print(f"stored the confusion counts at threshold {at_model['threshold']:.2f} "
          f"({at_model['confusion_matrix']}) in {path} (error_rates)")

