"""A saved model's JSON sidecar (threshold, class names, input size, face geometry) and the
checks of a model file that need no TensorFlow: what predict.py and test_script.py read before
deciding whether Keras is needed at all (a model already converted for OpenVINO is not)."""

import json
import math
import os

from facegender.faces import finder as faces
from facegender.core.common import CLASS_NAMES, ModelError, UsageError
from facegender.core.outputs import write_json


def sidecar_path(model_path):
    """`model_balanced.h5` -> `model_balanced.json`."""
    return os.path.splitext(model_path)[0] + ".json"


def load_sidecar(model_path):
    """The model's JSON sidecar, or {} when there is none; checked (check_sidecar) in this one
    place, so that no script acts on a broken threshold."""
    path = sidecar_path(model_path)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable sidecar ({err}); fix or delete it") from None
    check_sidecar(sidecar, path)
    return sidecar


def check_sidecar(sidecar, path):
    """Raise a ModelError naming the file and the key for a sidecar a script must not use: a
    threshold that is not a finite number strictly between 0 and 1 (JSON's NaN included),
    class names other than the two this toolkit trains, an input size that is not a size,
    error rates that are not confusion counts at a threshold."""
    def bad(key, wanted):
        raise ModelError(f"{path}: {key} is {json.dumps(sidecar[key])}; it must be {wanted} "
                         "(fix the sidecar or retrain the model)")

    if not isinstance(sidecar, dict):
        raise ModelError(f"{path}: not a sidecar (a JSON object is expected); fix or delete it")
    if "threshold" in sidecar:
        t = sidecar["threshold"]
        if (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                or not 0 < t < 1):
            bad("threshold", "a number between 0 and 1, both excluded")
    if "class_names" in sidecar and sidecar["class_names"] != list(CLASS_NAMES):
        bad("class_names", json.dumps(list(CLASS_NAMES)))
    if "input_size" in sidecar:
        size = sidecar["input_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            bad("input_size", "a whole number of pixels, 32 or more")
    if "error_rates" in sidecar:
        check_error_rates(sidecar["error_rates"], lambda wanted: bad("error_rates", wanted))


ERROR_RATES_FORM = ('{"confusion_matrix": [[female called female, female called male], '
                    '[male called female, male called male]] (whole numbers, 0 or more), '
                    '"threshold": the threshold they were counted at, in (0, 1), "tta": '
                    'true or false}')


def check_error_rates(record, bad):
    """The sidecar's `error_rates` (the confusion counts on labelled faces at a threshold, which
    predict.py corrects a collection's count with) must have ERROR_RATES_FORM; else bad(...)."""
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    matrix = record.get("confusion_matrix") if isinstance(record, dict) else None
    t = record.get("threshold") if isinstance(record, dict) else None
    if (not isinstance(matrix, list) or len(matrix) != 2
            or any(not isinstance(row, list) or len(row) != 2 or not all(map(whole, row))
                   for row in matrix)
            or isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
            or not 0 < t < 1 or not isinstance(record.get("tta", False), bool)):
        bad(ERROR_RATES_FORM)


def store_error_rates(model_path, record):
    """Write `record` (ERROR_RATES_FORM, plus where it was measured) into the model's sidecar as
    `error_rates`, keeping every other key; atomically, so a killed run leaves the old file."""
    path = sidecar_path(model_path)
    sidecar = dict(load_sidecar(model_path))  # checked: a broken sidecar is not built upon

    def bad(wanted):
        raise ModelError(f"{path}: error_rates to store are malformed; expected {wanted}")

    check_error_rates(record, bad)
    sidecar["error_rates"] = record
    write_json(path, sidecar)
    return path


def decision_threshold(model_path, override=None):
    """(threshold on P(male), where it came from): `override`, else the sidecar's, else 0.5."""
    if override is not None:
        return float(override), "--threshold"
    sidecar = load_sidecar(model_path)
    if "threshold" in sidecar:
        return float(sidecar["threshold"]), "the model's sidecar"
    return 0.5, "default, no sidecar found"


def face_geometry(model_path):
    """The face geometry (faces.Geometry) the model was trained on, from its sidecar: the
    crop it must be fed. None for a sidecar without one (every model before alignment), or
    no sidecar: images as given."""
    try:
        return faces.geometry_of(load_sidecar(model_path))
    except (UsageError, AttributeError, TypeError, ValueError) as err:
        raise ModelError(f"{sidecar_path(model_path)}: face_geometry is not usable ({err}); "
                         "fix it or retrain the model") from None


def check_model_file(path):
    """Raise a ModelError naming `path` unless it is a model file that exists."""
    if not os.path.exists(path):
        raise ModelError(f"{path}: model file not found; pass --model_path to a saved model "
                         "(train one with train_model.py)")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a folder; pass --model_path to a .h5 or .keras model file")


def check_input_size(path, shape):
    """Raise a ModelError unless a model of input `shape` (batch, height, width, channels) takes
    square RGB images of the size its sidecar (if any) names."""
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ModelError(f"{path}: model takes {tuple(shape)}; expected square RGB images in "
                         "(a model from train_model.py)")
    size = load_sidecar(path).get("input_size", shape[1])
    if size != shape[1]:
        raise ModelError(f"{sidecar_path(path)}: input_size is {size} but the model takes "
                         f"{shape[1]}x{shape[1]}; the sidecar belongs to another model")
