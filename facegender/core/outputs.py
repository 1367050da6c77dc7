"""Writing outputs atomically: a run killed at any moment leaves the old file or the new one."""

import contextlib
import csv
import io
import json
import math
import os
import tempfile


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same extension); rename it into place on success."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # The temporary name ends with the whole file name, so writers that check the extension
    # (Keras wants `.h5`, `.keras`, `.weights.h5`) accept it.
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=f".{name}", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def make_writable_dir(folder):
    """Create `folder` if needed and prove a file can be written in it (raises OSError if not)."""
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix=".partial-probe-", dir=folder):
        pass


def without_nan(obj):
    """`obj` with every NaN or infinite float (NumPy's too) as None, through dicts, lists and
    tuples: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_nan(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj, strict=False):
    """`obj` as indented JSON. strict: NaN and infinities become null (without_nan) and any
    left would be an error, so that every JSON reader takes the file."""
    if strict:
        obj = without_nan(obj)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, allow_nan=not strict)
            f.write("\n")


def write_text(path, text):
    """UTF-8 text; a file name that is not valid UTF-8 (os.fsdecode gives its odd bytes as
    lone surrogates) is written as its own bytes (surrogateescape), so the path in the file is
    the file's, byte for byte, instead of ending the run in a UnicodeEncodeError."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(text)


def write_csv(path, header, rows):
    """A CSV of `header` and `rows` (sequences of cells), written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_figure(fig, path, **kwargs):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
