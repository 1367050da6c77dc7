"""The model card's factors: every class's recall and the macro-F1 per value of each attribute
(age, origin, ...) that a data folder's attributes.csv gives, with intervals, for
facegender.evaluation.evaluate.
"""

import os

import numpy as np

from facegender.data import attributes
from facegender.evaluation import metrics

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


def factor_record(tables, threshold):
    """metrics.json's `factors`: the tables of factor_tables and how their intervals were
    drawn."""
    return {"threshold": threshold, "confidence": FACTOR_CONFIDENCE,
            "recall_interval": "Wilson score",
            "macro_f1_interval": f"percentile bootstrap, {FACTOR_RESAMPLES} resamples, seed 0",
            "tables": tables}


def age_panels(tables):
    """(title, rows) for every attribute that is age, one per source, for recall_by_age.png."""
    return [(f"Recall by age band, {t['source']}", t["rows"]) for t in tables
            if t["attribute"].lower() == attributes.AGE_COLUMN]
