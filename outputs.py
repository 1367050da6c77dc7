"""Writing outputs atomically: a run killed at any moment leaves the old file or the new one."""

import contextlib
import csv
import io
import json
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


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
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
