"""Evaluate a saved face-gender model on a labelled folder of images.

    python test_script.py --data_path DIR [--model_path model_balanced.h5] [--output_dir OUT]

DIR holds female/ and male/. Reports at the model's own threshold (from its JSON sidecar) and at
the threshold that gives the best macro-F1 on this data, saves the confusion matrix, ROC,
precision-recall and reliability curves, metrics and per-image predictions, and copies every
misclassified image into misclassified/ with a Grad-CAM contact sheet of the worst mistakes.
A data folder with an attributes.csv (age, origin, ...) also gets every class's recall and the
macro-F1 per value of each attribute, with 95% intervals: the model card's factors.
"""

import argparse
import json
import os
import shutil
import sys

import quiet

quiet.hide_tensorflow_start_up()  # TensorFlow is imported only where needed, and quietly

import numpy as np  # noqa: E402

import attributes  # noqa: E402
import cli  # noqa: E402
import data  # noqa: E402
import diagnostics  # noqa: E402
import inference  # noqa: E402
import metrics  # noqa: E402
import plots  # noqa: E402
import sidecar  # noqa: E402
from data import CLASS_NAMES, DataError  # noqa: E402
from outputs import atomic_path, make_writable_dir, write_csv, write_json  # noqa: E402

NO_FACE_SHOWN = 10  # images without a face named on the terminal (metrics.json has them all)
# The per-image CSV: a name of its own, so that an evaluation in the folder where predict.py
# wrote predictions.csv (and its summary, which points at it) never writes over it.
EVALUATION_CSV = "evaluation.csv"
# Which files in misclassified/ the last run copied there: the next run replaces them, and
# touches nothing else in the folder.
COPIES_RECORD = ".copies.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", nargs="+", required=True,
                   help="folder(s) holding female/ and male/, or a folder of such folders (their "
                        "dev/ or val/ split where they have one); several are reported per "
                        "source as well as pooled")
    p.add_argument("--output_dir", default=".", help="where every output is written")
    p.add_argument("--group_by", choices=["suffix", "folder"], default=None,
                   help="also report per group: 'suffix' is the file-name part after the last "
                        "underscore (e.g. _blurred), 'folder' the sub-folder inside the class")
    p.add_argument("--no_copy", action="store_true", help="do not copy misclassified images")
    p.add_argument("--report", metavar="FILE.html", default=None,
                   help="also write one self-contained HTML page: the numbers, the tables by "
                        "source and factor, the figures and a gallery of the mistakes and the "
                        "faces nearest the threshold, as the model saw them")
    p.add_argument("--store_error_rates", action="store_true",
                   help="also write this data's confusion counts at the model's threshold into "
                        "the model's sidecar (error_rates), which predict.py corrects a "
                        "collection's share of women with; the data should be faces the model "
                        "picked nothing on")
    cli.add_model_arguments(p)
    args = p.parse_args(argv)
    cli.check_model_arguments(p, args)
    if args.report and not args.report.lower().endswith((".html", ".htm")):
        p.error(f"--report {args.report}: must end in .html")
    if args.store_error_rates and args.threshold is not None:
        p.error("--store_error_rates counts at the sidecar's threshold, the one predict.py "
                "uses; leave out --threshold")
    return args


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

def evaluate(args):
    sources = data.find_sources(args.data_path)
    source_attributes = read_source_attributes(sources)
    # Fail on an unwritable output folder now, not after minutes of predicting.
    make_writable_dir(args.output_dir)
    # Evaluation takes whichever classes are there; an output folder inside the data is skipped,
    # so a second run never reads the first run's misclassified copies back as data.
    paths, labels, source_of, class_roots, listed = [], [], [], [], {}
    for name, folder in sources:
        class_dirs = data.find_class_dirs(folder, required=())
        p, y = data.list_labeled_images(folder, required=(), exclude=[args.output_dir])
        listed[name] = p
        paths += p
        labels.append(y)
        source_of += [name] * len(p)
        class_roots += [class_dirs[CLASS_NAMES[k]] for k in y]
    labels = np.concatenate(labels)
    inference.check_backend(args.backend, args.precision)
    model_threshold, source = sidecar.decision_threshold(args.model_path, args.threshold)
    runner, image_size = inference.load_runner(args.model_path, args.backend, args.precision,
                                               args.cache_dir, model_threshold, args.tta,
                                               not args.unsafe)
    # The model is fed the faces it was trained on: its sidecar's geometry, or as given.
    geometry = sidecar.face_geometry(args.model_path)
    found = data.main_faces(paths, geometry, args.cache_dir, args.verbose, args.backend)
    reader = data.ImageReader(image_size, geometry, found)
    print(f"evaluating {len(paths)} images ({np.sum(labels == 0)} female, "
          f"{np.sum(labels == 1)} male) at {image_size}x{image_size} on {runner.name}"
          + (f", from {len(sources)} sources" if len(sources) > 1 else "")
          + f"; face crop: {geometry or 'as given (the model names no face geometry)'}")
    scores, unreadable = inference.score_paths(runner, paths, image_size, args.batch_size,
                                               args.verbose, reader=reader)
    backend = runner.name
    # Its compiled models are done with: let them go before the Grad-CAM model is compiled,
    # so the mistakes' sheet costs what it shows, not a second copy of the network.
    del runner
    no_face = data.faceless(paths, found, unreadable)
    keep = ~np.isnan(scores)  # an unreadable file has no score
    paths = [p for p, k in zip(paths, keep) if k]
    source_of = [s for s, k in zip(source_of, keep) if k]
    class_roots = [c for c, k in zip(class_roots, keep) if k]
    labels, scores = labels[keep], scores[keep]
    if len(paths) == 0:
        raise DataError(f"{' '.join(args.data_path)}: none of the images could be read")
    missing = [name for k, name in enumerate(CLASS_NAMES) if not np.any(labels == k)]
    if missing:
        print(f"note: no {' or '.join(missing)} images here; "
              "the report covers the other class only")

    at_model = metrics.evaluation_report(labels, scores, model_threshold)
    best_t, _ = metrics.best_threshold(labels, scores)
    at_best = metrics.evaluation_report(labels, scores, best_t)
    thresholds, curve = metrics.sweep_thresholds(labels, scores)
    print_report(f"At the model's threshold ({source})", at_model)
    print_report("At the best threshold for this data (swept in 0.01 steps; optimistic, "
                 "since it is tuned on the data it scores)", at_best)

    results = {
        "data_path": [os.path.abspath(p) for p in args.data_path],
        "model_path": os.path.abspath(args.model_path),
        "images": len(paths),
        "model_threshold": {**at_model, "source": source},
        "best_threshold": at_best,
        "sweep": [{"threshold": float(t), "macro_f1": float(f)} for t, f in zip(thresholds, curve)],
        "backend": backend,
        "unreadable_images": unreadable,
        "face_geometry": geometry and geometry.to_dict(),
        # Images in which no face was found, scored as given.
        "images_without_a_face": no_face,
    }
    if len(sources) > 1:
        rows = metrics.group_table(source_of, labels, scores, model_threshold)
        print_group_table(rows, "source", model_threshold)
        worst = min(rows, key=lambda r: r["macro_f1"])
        print(f"worst source: {worst['group']} (macro-F1 {worst['macro_f1']:.4f})")
        results["sources"] = {"threshold": model_threshold, "rows": rows}
    if args.group_by:
        groups = [group_of(p, root, args.group_by) for p, root in zip(paths, class_roots)]
        if len(sources) > 1:
            groups = [f"{s} {g}" for s, g in zip(source_of, groups)]
        rows = metrics.group_table(groups, labels, scores, model_threshold)
        print_group_table(rows, args.group_by, model_threshold)
        results["groups"] = {"by": args.group_by, "threshold": model_threshold, "rows": rows}
    if source_attributes:
        tables = factor_tables(source_attributes, listed, paths, source_of, labels, scores,
                               model_threshold)
        print_factor_tables(tables, model_threshold)
        results["factors"] = {
            "threshold": model_threshold, "confidence": FACTOR_CONFIDENCE,
            "recall_interval": "Wilson score",
            "macro_f1_interval": f"percentile bootstrap, {FACTOR_RESAMPLES} resamples, seed 0",
            "tables": tables}

    predicted = (scores >= model_threshold).astype(int)
    out = args.output_dir
    rows = [(p, CLASS_NAMES[y], f"{s:.6f}", CLASS_NAMES[k], int(y == k))
            for p, y, s, k in zip(paths, labels, scores, predicted)]
    write_csv(os.path.join(out, EVALUATION_CSV),
              ["path", "true", "p_male", "predicted", "correct"], rows)
    # ROC, precision-recall and reliability PNGs; their numbers (AUC, AP, ECE) go in metrics.json.
    results["curves"] = diagnostics.save_curves(labels, scores, model_threshold, out)
    write_json(os.path.join(out, "metrics.json"), results)
    plots.save(plots.confusion_matrix_figure(at_model["confusion_matrix"], model_threshold),
               os.path.join(out, "confusion_matrix.png"))
    pictures = ["confusion_matrix.png", *results["curves"]["files"]]
    panels = age_panels(results.get("factors", {}).get("tables", []))
    if panels:
        plots.save(plots.recall_by_age_figure(panels), os.path.join(out, "recall_by_age.png"))
        pictures.append("recall_by_age.png")
    wrong = np.flatnonzero(predicted != labels)
    copies_root = os.path.join(out, "misclassified")
    copies = []
    if not args.no_copy:
        replaced = remove_earlier_copies(copies_root)
        copies = [copy_misclassified(paths[i], CLASS_NAMES[labels[i]],
                                     CLASS_NAMES[predicted[i]], scores[i], copies_root)
                  for i in wrong]
        if copies or replaced:
            record_copies(copies_root, copies)
    print(f"\n{len(wrong)} misclassified at threshold {model_threshold:.2f}"
          + ("" if args.no_copy else f", copied into {copies_root}")
          + (f" (replacing the earlier run's {replaced} file(s) there)"
             if not args.no_copy and replaced else ""))
    if not args.no_copy and len(wrong):
        explain = diagnostics.grad_cam_for(args.model_path, args.cache_dir, args.backend,
                                           not args.unsafe)
        sheet = diagnostics.misclassified_sheet(
            explain, paths, labels, scores, model_threshold,
            os.path.join(copies_root, "contact_sheet.png"), reader=reader)
        record_copies(copies_root, copies + [sheet["path"]])
        print(f"contact sheet of the {sheet['shown']} most confident mistakes"
              + (f" ({sheet['left_out']} left out)" if sheet["left_out"] else "")
              + f": {sheet['path']}" + (f"; {sheet['note']}" if sheet["note"] else ""))
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable image(s):")
        for p, why in unreadable.items():
            print(f"  {p}: {why}")
    if geometry is not None:
        print(f"no face found in {len(no_face)} of {len(paths)} images, scored as given"
              + (" (all listed in metrics.json, images_without_a_face)" if no_face else ""))
        for p in no_face[:NO_FACE_SHOWN]:
            print(f"  {p}")
        if len(no_face) > NO_FACE_SHOWN:
            print(f"  ... and {len(no_face) - NO_FACE_SHOWN} more")
    print(f"wrote {', '.join(pictures)}, metrics.json, {EVALUATION_CSV} in {os.path.abspath(out)}")
    if args.report:
        import report
        page = report.evaluation_page(results, out, paths, labels, scores,
                                      lambda i: reader(paths[i])[0])
        print(f"wrote {report.write(args.report, page)}")
    if args.store_error_rates:
        store_error_rates(args, at_model, len(paths), [name for name, _ in sources])
    return results


def store_error_rates(args, at_model, images, source_names):
    """--store_error_rates: this data's confusion counts at the model's threshold, into the
    model's sidecar, for predict.py's corrected share (audit.py)."""
    if missing := [n for n, (_, total) in at_model["per_class_accuracy"].items() if not total]:
        raise DataError(f"--store_error_rates: no {' or '.join(missing)} images in "
                        f"{' '.join(args.data_path)}; the rates need both classes")
    path = sidecar.store_error_rates(args.model_path, {
        "confusion_matrix": at_model["confusion_matrix"], "threshold": at_model["threshold"],
        "tta": bool(args.tta), "images": images, "measured_on": ", ".join(source_names)})
    print(f"stored the confusion counts at threshold {at_model['threshold']:.2f} "
          f"({at_model['confusion_matrix']}) in {path} (error_rates)")


def main(argv=None):
    args = parse_args(argv)
    if args.verbose == 2:
        quiet.show_tensorflow_start_up()
    return cli.exit_code(evaluate, args)


if __name__ == "__main__":
    sys.exit(main())
