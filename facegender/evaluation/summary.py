"""An evaluation's results as the text test_script.py prints: pure functions that take an
`Evaluation` (facegender.evaluation.evaluate), or a part of it, and return a str, printing
nothing, as scikit-learn's `classification_report` does. Kept apart from the evaluation itself
so that formatting a result needs neither a model nor the scoring machinery.
"""

from facegender.core.common import CLASS_NAMES
from facegender.evaluation.factors import FACTOR_RESAMPLES

NO_FACE_SHOWN = 10  # images without a face named on the terminal (metrics.json has them all)


def report_text(title, report):
    """One metrics.evaluation_report under `title`: its threshold and macro-F1, scikit-learn's
    table and each class's accuracy."""
    lines = [f"\n== {title}: threshold {report['threshold']:.2f}, "
             f"macro-F1 {report['macro_f1']:.4f}", report["report_text"]]
    for name, (ok, n) in report["per_class_accuracy"].items():
        share = f" ({ok / n:.2%})" if n else ""
        lines.append(f"  {name:>6} accuracy: {ok}/{n}{share}")
    return "\n".join(lines)


def group_table_text(rows, group_by, threshold):
    """A table of metrics.group_table rows; factor_table rows add each cell's interval."""
    intervals = "macro_f1_interval" in rows[0]

    def span(bounds):
        return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if intervals else ""

    width = max([12] + [len(str(r["group"])) for r in rows])
    f1_width, recall_width = (21, 28) if intervals else (9, 17)
    # Balanced accuracy: the mean of the two recalls, whatever the group's share of men; ROC
    # AUC: the ranking within the group, whatever the threshold ("-" for one class).
    lines = [f"\n== by {group_by}, at threshold {threshold:.2f}",
             f"{'group':<{width}} {'images':>6} {'macro-F1':>{f1_width}} "
             f"{'female recall':>{recall_width}} {'male recall':>{recall_width}} "
             f"{'bal. acc.':>9} {'ROC AUC':>8}"]
    for r in rows:
        cells = [f"{ok}/{n} {ok / n:.3f}" + span(r.get(f"{name}_recall_interval")) if n else "-"
                 for name, (ok, n) in ((name, r[name]) for name in CLASS_NAMES)]
        f1 = f"{r['macro_f1']:.4f}" + span(r.get("macro_f1_interval"))
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
        balanced = "-" if r.get("balanced_accuracy") is None else f"{r['balanced_accuracy']:.4f}"
        lines.append(f"{r['group']:<{width}} {r['images']:>6} {f1:>{f1_width}} "
                     f"{cells[0]:>{recall_width}} {cells[1]:>{recall_width}} {balanced:>9} "
                     f"{auc:>8}")
    return "\n".join(lines)


def factors_text(factors):
    """metrics.json's `factors`: one table per (source, attribute) with its intervals, and a
    note for each attributes.csv with rows that name no image found."""
    lines = [f"\n== factors: {factors['confidence']:.0%} intervals, Wilson for recall, "
             f"percentile bootstrap ({FACTOR_RESAMPLES} resamples) for macro-F1"]
    for t in factors["tables"]:
        lines.append(group_table_text(t["rows"], f"{t['attribute']} ({t['source']})",
                                      factors["threshold"]))
    for t in {t["file"]: t for t in factors["tables"]}.values():
        if t["rows_without_image"]:
            lines.append(f"note: {t['rows_without_image']} row(s) of {t['file']} name no image "
                         "found there")
    return "\n".join(lines)


def tables_text(evaluation):
    """Both reports, then the tables by source (naming the worst), by --group_by group and by
    factor, those the evaluation has."""
    at_model = evaluation.model_threshold
    parts = [report_text(f"At the model's threshold ({at_model['source']})", at_model),
             report_text("At the best threshold for this data (swept in 0.01 steps; "
                         "optimistic, since it is tuned on the data it scores)",
                         evaluation.best_threshold)]
    if evaluation.sources:
        rows = evaluation.sources["rows"]
        worst = min(rows, key=lambda r: r["macro_f1"])
        parts += [group_table_text(rows, "source", evaluation.sources["threshold"]),
                  f"worst source: {worst['group']} (macro-F1 {worst['macro_f1']:.4f})"]
    if evaluation.groups:
        parts.append(group_table_text(evaluation.groups["rows"], evaluation.groups["by"],
                                      evaluation.groups["threshold"]))
    if evaluation.factors:
        parts.append(factors_text(evaluation.factors))
    return "\n".join(parts)


def left_out_text(evaluation):
    """The unreadable images with why, and the images without a face (the first NO_FACE_SHOWN);
    "" when there is nothing to say (no unreadable image, and images scored as given)."""
    lines = []
    if evaluation.unreadable:
        lines.append(f"skipped {len(evaluation.unreadable)} unreadable image(s):")
        lines += [f"  {p}: {why}" for p, why in evaluation.unreadable.items()]
    if evaluation.face_geometry is not None:
        no_face = evaluation.no_face
        lines.append(f"no face found in {len(no_face)} of {evaluation.images} images, scored as "
                     "given" + (" (all listed in metrics.json, images_without_a_face)"
                                if no_face else ""))
        lines += [f"  {p}" for p in no_face[:NO_FACE_SHOWN]]
        if len(no_face) > NO_FACE_SHOWN:
            lines.append(f"  ... and {len(no_face) - NO_FACE_SHOWN} more")
    return "\n".join(lines)


def outputs_text(evaluation):
    """The mistakes (how many, where they were copied, the contact sheet), what was left out,
    the files written and the error rates stored."""
    e = evaluation
    lines = [f"\n{e.misclassified} misclassified at threshold "
             f"{e.model_threshold['threshold']:.2f}"
             + ("" if e.copies_dir is None else f", copied into {e.copies_dir}")
             + (f" (replacing the earlier run's {e.replaced} file(s) there)" if e.replaced
                else "")]
    if sheet := e.contact_sheet:
        lines.append(f"contact sheet of the {sheet['shown']} most confident mistakes"
                     + (f" ({sheet['left_out']} left out)" if sheet["left_out"] else "")
                     + f": {sheet['path']}" + (f"; {sheet['note']}" if sheet["note"] else ""))
    if left_out := left_out_text(e):
        lines.append(left_out)
    lines.append(f"wrote {', '.join(e.written)} in {e.output_dir}")
    if e.report_page:
        lines.append(f"wrote {e.report_page}")
    if e.error_rates:
        lines.append(f"stored the confusion counts at threshold "
                     f"{e.error_rates['threshold']:.2f} ({e.error_rates['confusion_matrix']}) "
                     f"in {e.error_rates_path} (error_rates)")
    return "\n".join(lines)


def summary(evaluation):
    """Everything test_script.py prints once the evaluation is done: tables_text, then
    outputs_text."""
    return tables_text(evaluation) + "\n" + outputs_text(evaluation)
