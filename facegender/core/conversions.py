"""The cache of models converted to OpenVINO: entry names, where they live, reading one back and
writing one so that a killed run never leaves half of it.

The classifier's conversions (inference.py) and the face finder's (mtcnn_openvino.py) share it:
`<cache root>/openvino/<family>-<digest>.xml` and its `.bin`, one entry per family. It imports
OpenVINO only when used, and no TensorFlow ever: reading a conversion back is the fast path.
"""

import hashlib
import json
import os

from facegender.core.common import default_cache_dir


def cache_name(family, *parts):
    """'<family>-<digest of parts and the OpenVINO version>': the name of a cache entry. A new
    entry replaces the entries of its family (older conversions of the same model), so a
    family has no '-' in it."""
    import openvino as ov
    digest = hashlib.sha256(json.dumps([*parts, ov.__version__]).encode()).hexdigest()[:16]
    return f"{family}-{digest}"


def cache_path(name, cache_dir=None):
    """Where the converted model of cache entry `name` is kept (its .xml; the .bin beside it)."""
    return os.path.join(cache_dir or default_cache_dir(), "openvino", f"{name}.xml")


def read_cached(xml):
    """The converted model saved at `xml`, or None when there is none or it is damaged (it is
    then converted again and overwritten)."""
    if not os.path.exists(xml):
        return None
    import openvino as ov
    try:
        return ov.Core().read_model(xml)
    except Exception:
        return None


def save(converted, xml):
    """Write `converted` (an openvino.Model) to `xml` and its .bin, and drop the older entries
    of its family. The pair is written under temporary names and renamed into place, weights
    first, so a killed run never leaves a half-written pair. A cache that cannot be written
    is only a missed speed-up: nothing is raised."""
    import openvino as ov
    tmp = os.path.join(os.path.dirname(xml), f".partial-{os.getpid()}-{os.path.basename(xml)}")
    try:
        os.makedirs(os.path.dirname(xml), exist_ok=True)
        # float16 weights (the default) would move scores by up to 1e-2: keep float32.
        ov.save_model(converted, tmp, compress_to_fp16=False)
        os.replace(tmp[:-4] + ".bin", xml[:-4] + ".bin")
        os.replace(tmp, xml)
        remove_older_conversions(xml)
    except Exception:  # a full disk or a read-only cache: run without caching
        for leftover in (tmp, tmp[:-4] + ".bin"):
            if os.path.exists(leftover):
                os.remove(leftover)


def remove_older_conversions(xml):
    """Delete the cache's other entries of the same family (for a model file: it was retrained
    or replaced since), so the cache holds one conversion per family."""
    folder, name = os.path.split(xml)
    family = name.split("-")[0]
    for other in os.listdir(folder):
        if other.startswith(family + "-") and not other.startswith(name[:-4] + "."):
            try:
                os.remove(os.path.join(folder, other))
            except OSError:
                pass  # another process removed it first
