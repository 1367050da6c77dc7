"""Finding a face and cutting it to the model's one canonical crop.

Every source frames its faces its own way (CelebA tight, UTKFace loose, FACECOM portraits,
All-Age-Faces rotated with black corners, photos of whole heads and shoulders), and a model
trained on them learns the framing, the hair and the clothes along with the face. So every
image, a crop or a photo, in training and in use, goes through the same face finder (MTCNN: a
box and five landmarks per face) and is cut to one geometry before it is resized:

- `aligned`: the five landmarks are fitted, by a least-squares similarity (rotation, scale,
  shift), to the standard five-point template (the one ArcFace and most face libraries use),
  so the eyes are level at a fixed height and distance; `scale` widens the crop around the
  template (1.0: brow to chin);
- `box`: the square around the finder's box, `scale` times its longer side, not rotated.

The geometry belongs to the model: train_model.py writes it into the sidecar, and
test_script.py and predict.py feed a model the faces it was trained on (a sidecar without one
means "as given"). An image in which no face is found is used as given, and counted.

Detection costs milliseconds an image (a face crop: about 1.2 ms with MTCNN on OpenVINO, 6 on
TensorFlow, on two cores; a photo, tens), a hundred times what reading its landmarks back costs,
so the landmarks are cached per file, keyed by the file's content (`LandmarkCache`): no epoch
and no second evaluation detects again.
"""

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import threading
import zlib

import numpy as np
from PIL import Image

from facegender.faces import mtcnn_openvino
from facegender.core import workers
from facegender.core.common import MissingDependency, UsageError, default_cache_dir
from facegender.core.outputs import atomic_path
from facegender.core.progress import Progress

log = logging.getLogger(__name__)

# The five-point template (left eye, right eye, nose tip, left and right mouth corners) in a
# 112 x 112 crop: the one of ArcFace/insightface, which most face pipelines align to.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
KINDS = ("aligned", "box")
DEFAULT_GEOMETRY = "aligned:1.0"  # train_model.py's default, chosen by bench/geometry.py
# A face crop is searched at this size (long side): a face fills most of it, so the detector
# needs only its larger pyramid scales, and same-size images are detected in batches.
CROP_DETECT_SIDE = 160
CROP_MIN_FACE = 40  # pixels at CROP_DETECT_SIDE: a quarter of the crop
DETECT_BATCH = 32
PHOTO_SIDE = 1600  # photos are decoded at most about this large to find and cut their faces
MIN_CONFIDENCE = 0.9


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How a face is cut out: `kind` (aligned or box) and `scale` (crop side per face size)."""
    kind: str = "aligned"
    scale: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UsageError(f"face geometry {self.kind!r}: use one of {', '.join(KINDS)}")
        if not 0.5 <= self.scale <= 3:
            raise UsageError(f"face geometry scale {self.scale}: use 0.5 to 3")

    def to_dict(self):
        return {"finder": "mtcnn", "kind": self.kind, "scale": self.scale}

    def __str__(self):
        return f"{self.kind} {self.scale:g}"


def parse_geometry(text):
    """'none' -> None (as given); 'aligned', 'aligned:1.2', 'box:1.0' -> Geometry."""
    if text in (None, "", "none"):
        return None
    kind, _, scale = text.partition(":")
    try:
        return Geometry(kind, float(scale) if scale else 1.0)
    except ValueError:
        raise UsageError(f"face geometry {text!r}: use none, aligned[:SCALE] or box[:SCALE]"
                         ) from None


def geometry_of(sidecar):
    """The geometry a model was trained on, from its sidecar; None ("as given") when the
    sidecar names none, as every model before face alignment."""
    spec = sidecar.get("face_geometry")
    if not spec:
        return None
    return Geometry(spec.get("kind", "aligned"), float(spec.get("scale", 1.0)))


# ---------------------------------------------------------------------------
# The canonical crop

@dataclasses.dataclass(frozen=True)
class Face:
    """One face found in an image: box (x, y, w, h), five landmarks (5, 2) in pixels of the
    upright image, and the finder's confidence."""
    box: tuple
    landmarks: np.ndarray
    confidence: float

    def to_list(self):
        return [round(float(v), 2) for v in (*self.box, *self.landmarks.ravel())] + [
            round(float(self.confidence), 4)]

    def scaled(self, k):
        return Face(tuple(v * k for v in self.box), self.landmarks * k, self.confidence)

    @classmethod
    def from_list(cls, values):
        values = list(map(float, values))
        return cls(tuple(values[:4]), np.array(values[4:14]).reshape(5, 2), values[14])


def similarity(src, dst):
    """The 2x3 similarity (rotation, uniform scale, shift) that maps points `src` onto `dst` in
    the least-squares sense (Umeyama 1991, without reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def template(size, scale=1.0):
    """Where `aligned` puts the five landmarks in a size x size crop."""
    return (0.5 + (TEMPLATE_112 / 112 - 0.5) / scale) * size


def crop_matrix(face, geometry, size):
    """The 2x3 matrix taking pixels of the image to pixels of the size x size crop."""
    if geometry.kind == "aligned":
        return similarity(face.landmarks, template(size, geometry.scale))
    x, y, w, h = face.box
    side = max(w, h) * geometry.scale
    k = size / side
    return np.array([[k, 0, size / 2 - k * (x + w / 2)], [0, k, size / 2 - k * (y + h / 2)]])


def canonical_crop(image, face, geometry, size):
    """The size x size uint8 crop of `face` in `image` (a PIL RGB image or an array) by
    `geometry`. Parts of the crop outside the image are filled by reflecting it, so the
    border carries no mark of the source (a black fill would)."""
    import cv2  # warpAffine: one resampling from the photo to the crop, with a reflected border

    pixels = np.asarray(image, np.uint8)
    matrix = crop_matrix(face, geometry, size)
    shrink = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if shrink < 0.5:
        # Resampling far down in one step aliases; halve the image first until it is close.
        factor = 2 ** int(np.floor(np.log2(0.5 / shrink)) + 1)
        h, w = pixels.shape[:2]
        small = Image.fromarray(pixels).resize((max(1, w // factor), max(1, h // factor)),
                                               Image.BOX)
        pixels = np.asarray(small)
        matrix = matrix @ np.diag([w / small.width, h / small.height, 1.0])
    return cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------
# The face finder

def face_finder(cache_dir=None, backend="auto"):
    """The face finder: MTCNN on OpenVINO (OpenVINOFaceFinder) where OpenVINO is installed and
    `backend` is not 'keras', on TensorFlow (FaceFinder) otherwise. Both find the same faces
    (see LandmarkCache.VERSION); `cache_dir` is the cache root the OpenVINO networks are kept
    in (default: common.default_cache_dir())."""
    if backend != "keras" and importlib.util.find_spec("openvino") is not None:
        return OpenVINOFaceFinder(cache_dir)
    return FaceFinder()


class OpenVINOFaceFinder:
    """MTCNN on OpenVINO (mtcnn_openvino.py: the `mtcnn` package's networks, converted once and
    cached under `cache_dir`), loaded once per cache; what FaceFinder finds, several times
    faster, and without TensorFlow once the conversions are cached."""

    _lock = threading.Lock()
    _loaded = {}  # cache root -> mtcnn_openvino.MTCNN
    # find_faces gives it two batches at once: one's NumPy work overlaps the other's networks
    # (about a quarter more faces a second on two cores than one batch at a time).
    batches_at_once = 2

    def __init__(self, cache_dir=None):
        root = cache_dir or default_cache_dir()
        with OpenVINOFaceFinder._lock:
            if root not in OpenVINOFaceFinder._loaded:
                OpenVINOFaceFinder._loaded[root] = mtcnn_openvino.MTCNN(root)
        self.mtcnn = OpenVINOFaceFinder._loaded[root]

    def find(self, images, min_face_size=20):
        """Faces (a list per image, by confidence) in RGB uint8 arrays of one shape. Several
        threads may call it at once."""
        if not images:
            return []
        found = self.mtcnn.detect(list(images), min_face_size, MIN_CONFIDENCE)
        return [[Face(tuple(map(float, row[:4])), row[4:14].reshape(5, 2), float(row[14]))
                 for row in rows] for rows in found]


class FaceFinder:
    """MTCNN (the `mtcnn` package: its weights ship in the wheel), loaded once, on TensorFlow:
    the reference OpenVINOFaceFinder is measured against, and the finder where OpenVINO is not
    installed or --backend keras is asked for."""

    _lock = threading.Lock()
    _mtcnn = None

    def __init__(self):
        with FaceFinder._lock:
            if FaceFinder._mtcnn is None:
                try:
                    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                    from mtcnn import MTCNN
                except ImportError as err:
                    raise MissingDependency(f"face finding needs mtcnn ({err}); "
                                            "pip install mtcnn==1.0.0") from None
                _fix_pyramid()
                FaceFinder._mtcnn = MTCNN(device="CPU:0")
        self.mtcnn = FaceFinder._mtcnn

    def find(self, images, min_face_size=20):
        """Faces (a list per image, by confidence) in RGB uint8 arrays of one shape."""
        if not images:
            return []
        with FaceFinder._lock:  # MTCNN's stages keep state between calls
            found = self.mtcnn.detect_faces(list(images), min_face_size=min_face_size,
                                            threshold_onet=MIN_CONFIDENCE)
        faces = []
        for per_image in found:
            row = []
            for f in per_image:
                points = np.array([f["keypoints"][k] for k in
                                   ("left_eye", "right_eye", "nose", "mouth_left",
                                    "mouth_right")], np.float64)
                row.append(Face(tuple(map(float, f["box"])), points, float(f["confidence"])))
            faces.append(sorted(row, key=lambda face: -face.confidence))
        return faces


def _fix_pyramid():
    """mtcnn 1.0.0 counts its pyramid's scales as if min_face_size were 12, so any larger
    minimum shrinks the last scales below PNet's 12 px input and the whole batch fails ("no
    face"). Count them from the first scale instead, as the original MTCNN does
    (mtcnn_openvino.scale_pyramid, which the OpenVINO finder uses too)."""
    import mtcnn.stages.stage_pnet as stage_pnet
    stage_pnet.build_scale_pyramid = mtcnn_openvino.scale_pyramid


def main_face(faces, width, height):
    """The face an image of a face is of: the largest, preferring ones near the centre (a
    crop can show part of a second person at its edge)."""
    def weight(face):
        x, y, w, h = face.box
        off = np.hypot((x + w / 2) / width - 0.5, (y + h / 2) / height - 0.5)
        return w * h * max(0.05, 1 - 2 * off)
    return max(faces, key=weight) if faces else None


def detection_view(image):
    """`image` resized so its long side is CROP_DETECT_SIDE and padded (bottom, right) to a
    square, as an array, and the factor back to the image's pixels."""
    k = CROP_DETECT_SIDE / max(image.size)
    w, h = max(1, round(image.width * k)), max(1, round(image.height * k))
    canvas = np.zeros((CROP_DETECT_SIDE, CROP_DETECT_SIDE, 3), np.uint8)
    canvas[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR))
    return canvas, image.width / w


def find_in_crops(finder, images, views=None):
    """The main face (or None) of each face-crop image (PIL RGB), in its pixels. `views`:
    their detection_view, where made already."""
    views = views or [detection_view(img) for img in images]
    found = finder.find([v for v, _ in views], min_face_size=CROP_MIN_FACE)
    out = []
    for img, (_, back), faces in zip(images, views, found):
        face = main_face(faces, img.width / back, img.height / back)
        out.append(face and face.scaled(back))
    return out


# ---------------------------------------------------------------------------
# The landmark cache

def content_key(blob):
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


class LandmarkCache:
    """The main face of each image file, keyed by the file's content: one JSON line per file,
    appended as it is found (a killed run keeps what it had), each with a checksum, so a
    damaged line is detected and the file detected again, never misread.

    A line is {"key": content digest, "face": [x, y, w, h, 10 landmark coordinates,
    confidence] or null, "crc": CRC-32 of the rest}.
    """

    # One key for both finders: MTCNN on OpenVINO (OpenVINOFaceFinder) writes the very lines
    # MTCNN on TensorFlow wrote. On 1,710 face crops and glare photos (UTKFace, FACECOM,
    # CelebA, All-Age-Faces dev, the sunny set; bench/finder_parity.py) they agreed on face or
    # no face for all, and on the box and the five whole-pixel landmarks of all 1,467 faces
    # (0 px apart; confidences within 1e-5).
    VERSION = f"mtcnn1-crop{CROP_DETECT_SIDE}-min{CROP_MIN_FACE}-conf{MIN_CONFIDENCE}"

    def __init__(self, cache_dir):
        self.path = os.path.join(cache_dir, "landmarks", f"{self.VERSION}.jsonl")
        self.entries = {}  # key -> Face or None, parsed when first asked for (get)
        self._lines = {}  # key -> (its checked line, the face's JSON text), not parsed yet
        self.damaged = 0
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                for line in f:
                    self._read_line(line)
        if self.damaged:
            # Keep only what checks out, so the damage is reported (and skipped) once.
            with atomic_path(self.path) as tmp:
                with open(tmp, "w") as f:
                    f.write("".join(line for line, _ in self._lines.values()))

    def _read_line(self, raw):
        """Check one line's CRC from its text, without parsing it: a cache holds a line for
        every image ever seen (about 90,000 for the dev and training folders here), and a run
        needs the faces of its own images only (get parses those)."""
        try:
            line = raw.decode()
            # The line as _line writes it: {"key": K, "face": F, "crc": C}; its CRC covers [K, F].
            if not (line.startswith('{"key": "') and line.endswith("}\n")):
                raise ValueError("torn")
            key_end, face_end = line.index(', "face": '), line.rindex(', "crc": ')
            key_text, face_text = line[8:key_end], line[key_end + 10:face_end]
            if zlib.crc32(f"[{key_text}, {face_text}]".encode()) != int(line[face_end + 9:-2]):
                raise ValueError("checksum")
            key = key_text[1:-1]  # a hex digest: nothing in it is escaped
            self._lines[key] = (line, face_text)
            self.entries.pop(key, None)  # a later line for the same file wins
        except (ValueError, UnicodeDecodeError):
            self.damaged += 1  # a torn last line or a damaged one: that file is detected again

    def __contains__(self, key):
        return key in self.entries or key in self._lines

    def get(self, key):
        """The Face (or None: no face) cached for `key`; None also when it is not cached."""
        if key not in self.entries and key in self._lines:
            value = json.loads(self._lines.pop(key)[1])
            self.entries[key] = None if value is None else Face.from_list(value)
        return self.entries.get(key)

    @staticmethod
    def _line(key, face):
        value = None if face is None else face.to_list()
        crc = zlib.crc32(json.dumps([key, value]).encode())
        return json.dumps({"key": key, "face": value, "crc": crc}) + "\n"

    def add(self, pairs):
        """Append (key, Face or None) pairs, flushed to disk at once."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        lines = []
        for key, face in pairs:
            # What a later run reads back, so the first run cuts the very same crops.
            self.entries[key] = None if face is None else Face.from_list(face.to_list())
            self._lines.pop(key, None)
            lines.append(self._line(key, self.entries[key]))
        # One write of whole lines in append mode: processes sharing the file do not interleave.
        with open(self.path, "a") as f:
            f.write("".join(lines))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def find_faces(paths, cache_dir, decode, verbose=1, finder=None, backend="auto", timeout=None):
    """The main face (a Face, or None where none is found or the file does not decode) of each
    image in `paths`, from the landmark cache where it has the file's content, detected (and
    cached) otherwise, with a progress bar over the detections.

    `decode(path, side)` gives (upright PIL RGB image at least `side` on its long side where
    the file is that large, long side of the full image): data.open_rgb. A worker that gives
    no result within `timeout` seconds (default common.WORKER_TIMEOUT_S) is a StuckWorker.
    """
    import collections

    cache = LandmarkCache(cache_dir)
    keys = [None] * len(paths)

    def key_of(i):
        try:
            keys[i] = content_key(read_file(paths[i]))
        except OSError:
            pass  # reported by whoever decodes it

    with workers.thread_pool(4, "read") as pool:
        for future in [pool.submit(key_of, i) for i in range(len(paths))]:
            workers.result(future, "a file-reading thread", timeout)
    todo = sorted({k: i for i, k in enumerate(keys) if k and k not in cache}.values())
    if todo:
        if verbose:
            log.info(f"finding faces in {len(todo)} of {len(paths)} images "
                     f"({len(paths) - len(todo)} cached in {cache.path})")
        finder = finder or face_finder(cache_dir, backend)
        progress = Progress(len(todo), verbose, label="faces: ")

        def load(i):
            try:
                image, side = decode(paths[i], CROP_DETECT_SIDE * 2)
            except Exception:
                return None  # unreadable: left for the reader to report
            return image, side, detection_view(image)

        def detect(decoding):
            images = [workers.result(f, "a decoding thread", timeout) for f in decoding]
            ok = [j for j, img in enumerate(images) if img is not None]
            return images, ok, find_in_crops(finder, [images[j][0] for j in ok],
                                             [images[j][2] for j in ok])

        def finish(chunk, detecting):
            images, ok, found = workers.result(detecting, "a face-finding thread", timeout)
            # JPEGs decode at a reduced scale; the cache holds pixels of the full image.
            cache.add([(keys[chunk[j]], face and face.scaled(
                images[j][1] / max(images[j][0].size))) for j, face in zip(ok, found)])
            progress.update(len(chunk))

        # Files decode (and are shrunk to their detection views) on two threads a batch ahead
        # of the finder, which may take several batches at once (batches_at_once); the
        # faces are cached in order.
        at_once = getattr(finder, "batches_at_once", 1)
        with workers.thread_pool(2, "decode") as decoders, \
                workers.thread_pool(at_once, "find-faces") as detectors:
            pending = collections.deque()
            for start in range(0, len(todo), DETECT_BATCH):
                chunk = todo[start:start + DETECT_BATCH]
                decoding = [decoders.submit(load, i) for i in chunk]
                pending.append((chunk, detectors.submit(detect, decoding)))
                if len(pending) > at_once:
                    finish(*pending.popleft())
            while pending:
                finish(*pending.popleft())
    if cache.damaged and verbose:
        log.warning(f"note: {cache.damaged} damaged line(s) in {cache.path} were ignored and "
                    "their files detected again")
    return [cache.get(k) if k else None for k in keys]
