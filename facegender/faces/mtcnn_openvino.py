"""MTCNN, the face finder, on OpenVINO: the `mtcnn` package's three networks (PNet proposes
windows over an image pyramid, RNet refines them, ONet gives the box, five landmarks and the
confidence) converted once from its own Keras models and weights, cached beside the
classifier's conversions, and run with mtcnn 1.0.0's pre- and post-processing written again in
NumPy and OpenCV: the same pyramid, window boxes, suppression, box regression, squaring and
crop-and-resize, so it finds the faces and landmarks the TensorFlow original finds
(bench/finder_parity.py measures how closely), at several times its speed, and without
importing TensorFlow once the conversions are cached.

Each network is compiled once: PNet for images of any size (every level of the pyramid, all
the images of a batch at once), RNet and ONet for any number of candidate windows.
"""

import contextlib
import hashlib
import importlib.util
import io
import os
import threading
import warnings

import numpy as np

from facegender.core import conversions
from facegender.core.common import MissingDependency

# Each network's input (batch, height, width, RGB); PNet slides over images of any size.
INPUTS = {"pnet": (None, None, None, 3), "rnet": (None, 24, 24, 3), "onet": (None, 48, 48, 3)}
WINDOW = 12  # PNet's window: the smallest face it sees, in pixels of a pyramid level
SCALE_FACTOR = 0.709  # between pyramid levels
# mtcnn 1.0.0's defaults: candidate thresholds, and the overlaps above which NMS drops a window.
PNET_THRESHOLD, RNET_THRESHOLD = 0.6, 0.7
PNET_NMS_LEVEL, PNET_NMS, RNET_NMS, ONET_NMS = 0.5, 0.7, 0.7, 0.7


def scale_pyramid(width, height, min_face_size, scale_factor=SCALE_FACTOR, min_size=WINDOW):
    """The scales at which PNet's window covers faces from `min_face_size` up to the image's
    short side. mtcnn 1.0.0 counts its scales as if min_face_size were 12, so any larger minimum
    shrinks the last scales below PNet's 12 px window and the whole batch fails ("no face");
    they are counted from the first scale here, as the original MTCNN does (faces.py patches
    mtcnn with this function)."""
    first = min_size / min_face_size
    count = int(np.floor(np.log(min(width, height) * first / min_size)
                         / -np.log(scale_factor))) + 1
    return first * scale_factor ** np.arange(max(count, 1))


# ---------------------------------------------------------------------------
# The networks: converted once from mtcnn's Keras models, then read back from the cache

def weights_file(name):
    """The path of mtcnn's weights for network `name`, found without importing the package
    (its __init__ imports TensorFlow)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("face finding needs mtcnn (its networks' weights); "
                                "pip install mtcnn==1.0.0")
    return os.path.join(list(spec.submodule_search_locations)[0], "assets", "weights",
                        f"{name}.lz4")


def cache_entry(name, cache_dir=None):
    """Where the conversion of network `name` is cached: its family is the network, its digest
    covers the weights (another mtcnn release converts again) and the OpenVINO version."""
    with open(weights_file(name), "rb") as f:
        weights = hashlib.sha256(f.read()).hexdigest()
    return conversions.cache_path(conversions.cache_name(f"mtcnn_{name}", weights), cache_dir)


def network(name, cache_dir=None):
    """Network `name` (pnet, rnet or onet) as an openvino.Model: from the cache, or converted
    from mtcnn's Keras model (TensorFlow, a few seconds, once) and cached."""
    xml = cache_entry(name, cache_dir)
    converted = conversions.read_cached(xml)
    if converted is None:
        converted = convert(name)
        conversions.save(converted, xml)
    return converted


def convert(name):
    """mtcnn's Keras network `name`, with its weights, converted to OpenVINO."""
    import openvino as ov
    import tensorflow as tf
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    model = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    model.build()
    model.set_weights(load_weights(weights_file(name)))
    traced = tf.function(lambda images: model(images), autograph=False, input_signature=[
        tf.TensorSpec(INPUTS[name], tf.float32)]).get_concrete_function()
    # OpenVINO prints its settings when "--verbose" is in sys.argv: keep that out of the output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # Weights copied: shared, they would be TensorFlow's memory, freed with `model` on
        # return (the networks then found nothing, or other faces).
        return ov.convert_model(traced, share_weights=False)


# ---------------------------------------------------------------------------
# mtcnn 1.0.0's arithmetic, in NumPy: a candidate is a row [image, x1, y1, x2, y2, score, ...]

def resize_area(batch, height, width):
    """The (n, h, w, 3) float32 batch resized to height x width by area averaging (what
    mtcnn's tf.image.resize(method=AREA) does, to about 1e-6)."""
    import cv2
    return np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                     for image in batch])


def by_score(rows):
    """Rows by falling score, as mtcnn sorts them (NumPy's default sort, reversed: equal scores
    come in the order mtcnn gives them)."""
    return rows[np.argsort(rows[:, 5])[::-1]]


def window_boxes(reg, prob, threshold, stride=2):
    """PNet's windows whose face probability is above `threshold`, as candidate rows (in the
    pixels of the pyramid level), by falling score: mtcnn's generate_bounding_box."""
    score = prob[..., 1]
    image, y, x = np.nonzero(score > threshold)
    dx1, dy1, dx2, dy2 = reg[image, y, x].T.astype(np.float64)
    size = WINDOW - 1  # window x spans pixels 2x + 1 ... 2x + 12: 11 from corner to corner
    left, top = x * stride + 1, y * stride + 1
    rows = np.stack([image, left + dx1 * size, top + dy1 * size, left + size + dx2 * size,
                     top + size + dy2 * size, score[image, y, x]], axis=1).astype(np.float64)
    return by_score(rows)


def overlaps(boxes, method):
    """Pairwise overlap of each group's boxes, (g, k, 4) [x1, y1, x2, y2] -> (g, k, k):
    intersection over union, or over the smaller box ('min'), areas without mtcnn's usual +1,
    as its NMS has them. A box of NaNs overlaps nothing."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    a, b = boxes[:, :, None], boxes[:, None, :]
    width = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    height = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    inter = width * height
    if method == "union":
        whole = area[:, :, None] + area[:, None, :] - inter
    else:
        whole = np.minimum(area[:, :, None], area[:, None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / whole  # 0/0 (empty boxes) and NaN boxes: never above a threshold


def nms(rows, threshold, method="union", sort=True):
    """mtcnn's non-maximum suppression, image by image: a row is dropped when any row before it
    (by score, once sorted) overlaps it by more than `threshold`, dropped or not (the original
    MTCNN drops only by kept rows; 1.0.0 does not, and its results are the reference here).
    Rows come back grouped by image, each image's in the order they had. All images at once:
    each image's boxes padded with NaN boxes to the most any image has."""
    if sort:
        rows = by_score(rows)
    if not len(rows):
        return rows
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    _, starts, counts = np.unique(rows[:, 0], return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(counts)), counts)
    slot = np.arange(len(rows)) - starts[group]  # each row's place among its image's
    boxes = np.full((len(counts), counts.max(), 4), np.nan)
    boxes[group, slot] = rows[:, 1:5]
    beaten = np.triu(overlaps(boxes, method) > threshold, 1).any(axis=1)
    return rows[~beaten[group, slot]]


def squared(rows):
    """Each box widened on its shorter side to a square about the same centre."""
    rows = rows.copy()
    w, h = rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]
    side = np.maximum(w, h)
    rows[:, 1] = rows[:, 1] + w * 0.5 - side * 0.5  # in mtcnn's order of operations
    rows[:, 2] = rows[:, 2] + h * 0.5 - side * 0.5
    rows[:, 3:5] = rows[:, 1:3] + side[:, None]
    return rows


def regressed(rows, offsets):
    """Boxes moved by a network's offsets, in units of the box's size (+1, as mtcnn has it)."""
    rows = rows.copy()
    w, h = rows[:, 3] - rows[:, 1] + 1, rows[:, 4] - rows[:, 2] + 1
    rows[:, 1:5] += offsets * np.stack([w, h, w, h], axis=-1)
    return rows


def crop_and_resize(batch, rows, size):
    """The size x size patch under each candidate's box, sampled bilinearly, zero outside the
    image: tf.image.crop_and_resize as mtcnn calls it (box corners divided by the image's size,
    then mapped onto pixel centres 0 ... side - 1), in float32 as TensorFlow computes it."""
    n, height, width, _ = batch.shape
    corners = (rows[:, [2, 1, 4, 3]] / np.array([height, width, height, width])).astype(
        np.float32)
    steps = np.arange(size, dtype=np.float32)

    def positions(start, end, extent):
        span = np.float32(extent - 1)
        at = start[:, None] * span + steps * ((end - start) * span / np.float32(size - 1))[:, None]
        inside = (at >= 0) & (at <= span)
        low = np.floor(at)
        high = np.ceil(at)
        return (np.clip(low, 0, extent - 1).astype(np.intp),
                np.clip(high, 0, extent - 1).astype(np.intp), at - low, inside)

    y0, y1, fy, in_y = positions(corners[:, 0], corners[:, 2], height)
    x0, x1, fx, in_x = positions(corners[:, 1], corners[:, 3], width)
    flat = batch.reshape(-1, batch.shape[-1])
    base = rows[:, 0].astype(np.intp)[:, None, None] * (height * width)

    def pixels(ys, xs):
        return np.take(flat, base + ys[:, :, None] * width + xs[:, None, :], axis=0)

    fx = fx[:, None, :, None]
    top = pixels(y0, x0)
    top += (pixels(y0, x1) - top) * fx
    bottom = pixels(y1, x0)
    bottom += (pixels(y1, x1) - bottom) * fx
    patches = top + (bottom - top) * fy[:, :, None, None]
    patches[~(in_y[:, :, None] & in_x[:, None, :])] = 0
    return patches


# ---------------------------------------------------------------------------
# The three stages

class MTCNN:
    """MTCNN on OpenVINO's CPU plugin, float32, the networks read from the cache under
    `cache_dir` (or converted into it). detect may run on several threads at once: each has
    its own inference requests, so one batch's NumPy work overlaps another's networks (two
    batches in flight find about a quarter more faces a second on two cores than one)."""

    def __init__(self, cache_dir=None):
        import openvino as ov
        core = ov.Core()
        # Every core on each request (the stages of a batch run one after another), in
        # float32: the CPU plugin's default on a bfloat16 CPU would move PNet's scores by 1e-2.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "ENABLE_CPU_PINNING": False}
        # PNet is compiled once for images of any size: the CPU plugin keeps what it prepares
        # for each input shape, so the pyramid's levels run within about a tenth of models
        # compiled at their fixed shapes (measured), and a photo of a new size waits for no
        # compile per level (30-60 ms each).
        self.networks = {name: core.compile_model(network(name, cache_dir), "CPU", config)
                         for name in INPUTS}
        self.requests = threading.local()  # each thread's {name: inference request}
        # Each network once, here, on the one thread that exists yet: the first `infer` of a
        # process initialises C++ statics inside OpenVINO's Python binding, and two threads
        # doing that at once deadlocked on its guard and the GIL (twice in about 25 runs).
        # After this no first call is left for worker threads to race over.
        for name, shape in INPUTS.items():
            side = WINDOW if name == "pnet" else shape[1]
            self.run(name, np.zeros((1, side, side, 3), np.float32))

    def run(self, name, inputs):
        """Network `name`'s outputs for the batch `inputs`, on this thread's request."""
        requests = self.requests.__dict__
        if name not in requests:
            requests[name] = self.networks[name].create_infer_request()
        outputs = requests[name].infer({0: inputs})  # copied out of the request's buffers
        return [outputs[i] for i in range(len(self.networks[name].outputs))]

    def detect(self, images, min_face_size=20, threshold=0.8):
        """The faces in `images` (RGB uint8 arrays of one shape): for each image, a (k, 15)
        array, a row per face by falling confidence: box x, y, w, h (whole pixels, inside the
        image), the five landmarks' (x, y) (left eye, right eye, nose, left and right mouth
        corners; whole pixels) and the confidence, ONet's, above `threshold`. As mtcnn 1.0.0's
        detect_faces gives them, with faces.py's pyramid."""
        batch = (np.stack(images).astype(np.float32) - 127.5) / 128  # mtcnn's normalization
        rows = self.propose(batch, min_face_size)
        if len(rows):
            rows = self.refine(batch, rows)
        if len(rows):
            rows = self.output(batch, rows, threshold)
        height, width = batch.shape[1:3]
        faces = np.zeros((len(rows), 15))
        if len(rows):
            x1, x2 = (np.clip(rows[:, k], 0, width - 1) for k in (1, 3))
            y1, y2 = (np.clip(rows[:, k], 0, height - 1) for k in (2, 4))
            faces[:, :4] = np.round(np.stack([x1, y1, x2 - x1, y2 - y1], axis=1))
            faces[:, 4:14:2] = np.round(rows[:, 6:11])
            faces[:, 5:14:2] = np.round(rows[:, 11:16])
            faces[:, 14] = rows[:, 5]
        return [faces[rows[:, 0] == i] for i in range(len(batch))]

    def propose(self, batch, min_face_size):
        """PNet over the pyramid: squared candidate rows in the images' pixels."""
        n, height, width, _ = batch.shape
        found = []
        for scale in scale_pyramid(width, height, min_face_size):
            # tf.image.resize truncates the scaled size, as int() does.
            h, w = int(height * scale), int(width * scale)
            if min(h, w) < WINDOW:  # an image smaller than the smallest face: mtcnn finds none
                continue
            reg, prob = self.run("pnet", resize_area(batch, h, w))
            rows = window_boxes(reg, prob, PNET_THRESHOLD)
            rows[:, 1:5] /= scale
            found.append(nms(rows, PNET_NMS_LEVEL, sort=False))
        return squared(nms(np.concatenate(found), PNET_NMS)) if found else np.zeros((0, 6))

    def refine(self, batch, rows):
        """RNet on each candidate's 24 x 24 patch: new scores and boxes, squared."""
        reg, prob = self.run("rnet", crop_and_resize(batch, rows, 24))
        rows = rows.copy()
        rows[:, 5] = prob[:, 1]
        rows = regressed(rows, reg)
        rows = rows[rows[:, 5] > RNET_THRESHOLD]
        return squared(nms(rows, RNET_NMS))

    def output(self, batch, rows, threshold):
        """ONet on each candidate's 48 x 48 patch: rows with the five landmarks' x then y
        (columns 6-15) and ONet's confidence, above `threshold`."""
        reg, points, prob = self.run("onet", crop_and_resize(batch, rows, 48))
        w, h = rows[:, 3:4] - rows[:, 1:2] + 1, rows[:, 4:5] - rows[:, 2:3] + 1
        points = points.copy()  # float32, as mtcnn keeps them
        points[:, :5] = w * points[:, :5] + rows[:, 1:2] - 1
        points[:, 5:] = h * points[:, 5:] + rows[:, 2:3] - 1
        rows = rows.copy()
        rows[:, 5] = prob[:, 1]
        rows = np.concatenate([regressed(rows, reg), points], axis=1)
        rows = rows[rows[:, 5] > threshold]
        return nms(rows, ONET_NMS, method="min")
