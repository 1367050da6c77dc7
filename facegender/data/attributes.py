"""Per-image attributes (age, origin, ...) read from an `attributes.csv` beside a data folder.

The file sits in the folder that holds `female/` and `male/`. Its first column is `path`, the
image's path relative to that folder (`female/0001.jpg`); every other column is an attribute
with one value per image. An `age` column is numeric and binned by decade ("20s"), with every
age from 60 up in one band ("60+"), so that each band holds enough people to read. An image
without a row, or with an empty cell, is in the "unknown" group of that attribute.

Evaluation reports every class's recall per value of every attribute (the "factors" of a model
card); training can draw every (class, attribute value) group equally often.

Plain Python and NumPy only: no TensorFlow, so the metrics and plots can use it.
"""

import csv
import os

from facegender.core.common import DataError

ATTRIBUTES_FILE = "attributes.csv"
UNKNOWN = "unknown"
AGE_COLUMN = "age"
OLDEST_BAND = 60  # 60 and up are one band


def age_band(age):
    """The decade band of an age in years: "<10", "10s", ..., "50s", "60+"."""
    age = float(age)
    if age >= OLDEST_BAND:
        return f"{OLDEST_BAND}+"
    if age < 10:
        return "<10"
    return f"{int(age // 10) * 10}s"


def band_order(value):
    """A sort key that puts age bands in age order, "unknown" last, other values by name."""
    if value == UNKNOWN:
        return (2, 0, value)
    if value == "<10":
        return (0, 0, value)
    digits = value.rstrip("s+")
    if digits.isdigit() and value.endswith(("s", "+")):
        return (0, int(digits), value)
    return (1, 0, value)


def attributes_file(folder):
    """The `attributes.csv` of a data folder, or None when it has none."""
    path = os.path.join(folder, ATTRIBUTES_FILE)
    return path if os.path.isfile(path) else None


def read_attributes(folder):
    """{image path (as os.path.join(folder, row path) normalised): {column: value}} from the
    folder's attributes.csv, and the attribute column names; ({}, []) when there is none.

    A malformed file is a DataError naming the file and the row: no `path` column, a row whose
    cell count differs from the header's, an empty or repeated path, a path that leaves the
    folder, or an age that is not a number from 0 to 150.
    """
    csv_path = attributes_file(folder)
    if csv_path is None:
        return {}, []
    fix = "fix that row or remove the file"
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise DataError(f"{csv_path}: not a readable CSV ({err}); {fix}") from None
    if not rows or not rows[0] or rows[0][0].strip().lower() != "path":
        raise DataError(f"{csv_path}: row 1: the first column must be 'path' (the image's "
                        "path relative to this folder), then one column per attribute")
    header = [name.strip() for name in rows[0]]
    columns = header[1:]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"{csv_path}: row 1: every column needs a distinct, non-empty name")
    root = os.path.normpath(folder)
    table = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(header):
            raise DataError(f"{csv_path}: row {number}: {len(row)} cells where the header has "
                            f"{len(header)}; {fix}")
        rel = row[0].strip()
        path = os.path.normpath(os.path.join(root, rel))
        if not rel or os.path.isabs(rel) or not path.startswith(root + os.sep):
            raise DataError(f"{csv_path}: row {number}: path {rel!r} is not a file inside "
                            f"{folder}; give it relative to the folder, like female/0001.jpg")
        if path in table:
            raise DataError(f"{csv_path}: row {number}: {rel} has a row already; {fix}")
        values = {}
        for name, cell in zip(columns, row[1:]):
            cell = cell.strip()
            if name.lower() == AGE_COLUMN and cell:
                try:
                    age = float(cell)
                except ValueError:
                    age = -1.0
                if not 0 <= age <= 150:
                    raise DataError(f"{csv_path}: row {number}: age {cell!r} is not a number "
                                    f"of years from 0 to 150; {fix}")
                cell = age_band(age)
            values[name] = cell or UNKNOWN
        table[path] = values
    return table, columns


def attribute_values(table, paths, column):
    """Each path's value of `column` (age already binned), "unknown" for images without a row."""
    return [table.get(os.path.normpath(p), {}).get(column, UNKNOWN) for p in paths]

