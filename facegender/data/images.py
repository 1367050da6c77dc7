"""Reading face images: listing the class folders and decoding the files, with no TensorFlow
(the `tf.data` pipeline that feeds training is pipeline.py), so that scoring on OpenVINO
never imports it.

A data folder holds one sub-folder per class, `female/` and `male/` (any letter case).
Class index 0 is female and 1 is male, so the model's single sigmoid output is P(male).

Images are decoded with Pillow (in inference.py's threads and inside training's `tf.data`
pipeline alike): Pillow reads every format people
actually have (JPEG, PNG, BMP, GIF, WebP, CMYK, 16-bit, palette), honours the EXIF orientation
tag, and lets a file that cannot be decoded be reported by name and skipped instead of
crashing a run after minutes of work.
"""

import logging
import os
import threading

import numpy as np
from PIL import Image, ImageOps

from facegender.faces import finder as faces_lib
from facegender.core.common import CLASS_NAMES, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Sub-folder names that hold a ready-made split inside a data folder.
TRAIN_DIR_NAMES = ("train",)
VAL_DIR_NAMES = ("val", "validation", "dev")


# ---------------------------------------------------------------------------
# Finding images

def find_subdir(root, names):
    """Return the first sub-folder of `root` whose name matches one of `names` (any case)."""
    try:
        entries = {e.name.lower(): e.path for e in os.scandir(root) if e.is_dir()}
    except OSError:
        return None
    for name in names:
        if name in entries:
            return entries[name]
    return None


def check_folder(root):
    """Raise a DataError naming `root` unless it is a readable folder."""
    hint = "pass a folder that holds female/ and male/"
    if not os.path.exists(root):
        raise DataError(f"{root}: no such folder; {hint}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: is a file, not a folder; {hint}")
    try:
        os.scandir(root).close()
    except OSError as err:
        raise DataError(f"{root}: cannot be read ({err.strerror}); check its permissions") from None


def find_class_dirs(root, required=CLASS_NAMES):
    """Map each class name to its folder inside `root`, matching names in any letter case.

    A class in `required` that has no folder is an error; evaluation passes `required=()` to
    take whichever classes are there (at least one).
    """
    check_folder(root)
    class_dirs = {}
    for name in CLASS_NAMES:
        path = find_subdir(root, [name])
        if path is not None:
            class_dirs[name] = path
        elif name in required:
            raise DataError(f"{os.path.join(root, name)}: class folder missing; "
                            f"put the {name} images in it (expected female/ and male/)")
    if not class_dirs:
        raise DataError(f"{root}: holds neither female/ nor male/; {', '.join(CLASS_NAMES)} "
                        "sub-folders are expected")
    return class_dirs


def list_image_files(folder, exclude=()):
    """All image files under `folder` (recursively), by extension, sorted.

    Hidden files and folders are skipped, and so are the folders in `exclude` (an output folder
    inside the data must not be read back as data). Symbolic links are followed, each real
    folder once, so a link loop ends.
    """
    skip = {os.path.realpath(p) for p in exclude}
    seen, found = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def list_labeled_images(root, required=CLASS_NAMES, exclude=()):
    """Return (paths, labels) for every image in the class folders of `root`.

    Labels are 0 for female and 1 for male. A class in `required` whose folder is missing or
    holds no images is an error.
    """
    paths, labels = [], []
    for name, folder in find_class_dirs(root, required).items():
        files = list_image_files(folder, exclude)
        if not files and name in required:
            raise DataError(f"{folder}: class folder holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add some or fix --data_path")
        paths += files
        labels += [CLASS_NAMES.index(name)] * len(files)
    if not paths:
        raise DataError(f"{root}: the class folders hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add some or fix --data_path")
    return paths, np.array(labels, dtype=np.int64)


def source_names(folders):
    """Short, distinct names for data folders: the last path parts that tell them apart (a
    split folder keeps its parent's name too: "celeba/dev", not "dev")."""
    parts = [os.path.abspath(f).rstrip(os.sep).split(os.sep) for f in folders]
    splits = TRAIN_DIR_NAMES + VAL_DIR_NAMES
    for extra in range(max(map(len, parts))):
        names = ["/".join(p[-(1 + extra + (p[-1].lower() in splits)):]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.abspath(f) for f in folders]


def has_class_dirs(root):
    return any(find_subdir(root, [name]) for name in CLASS_NAMES)


def find_sources(roots):
    """The labelled folders to evaluate, as (name, folder) pairs.

    Each root that holds female/ or male/ is one source. A root that holds neither is taken as
    a folder of sources: each sub-folder holding them is one, and so is each sub-folder whose
    val/ or dev/ split holds them (the part not trained on).
    """
    found = []
    for root in roots:
        check_folder(root)
        if has_class_dirs(root):
            found.append(root)
            continue
        inside = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            split = find_subdir(entry.path, VAL_DIR_NAMES)
            if has_class_dirs(entry.path):
                inside.append(entry.path)
            elif split and has_class_dirs(split):
                inside.append(split)
        if not inside:
            raise DataError(f"{root}: holds neither female/ nor male/, nor sub-folders that do; "
                            "pass a folder with female/ and male/ (or a folder of such folders)")
        found += inside
    return list(zip(source_names(found), found))


# ---------------------------------------------------------------------------
# Decoding

def open_rgb(path, draft_size):
    """Decode an image file to an upright RGB Pillow image, first frame only.

    `draft_size` lets JPEG decode straight at a reduced scale (no smaller than it), which makes
    large photos cheap. Images over Pillow's decompression-bomb limit are refused.
    Returns (image, long side of the original in pixels).
    """
    with Image.open(path) as img:
        if img.width * img.height > Image.MAX_IMAGE_PIXELS:
            # Pillow only warns up to twice this size; decoding it could exhaust memory.
            raise ValueError(f"{img.width}x{img.height} pixels is over the decompression-bomb "
                             f"limit of {Image.MAX_IMAGE_PIXELS}; downscale it first")
        original_side = max(img.size)
        img.draft("RGB", (draft_size, draft_size))
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: keep the top 8 bits rather than letting Pillow clip to white.
            img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8))
        return img.convert("RGB"), original_side


def load_image(path, image_size, face=None, geometry=None):
    """Decode one image file to a (size, size, 3) uint8 RGB array, upright, first frame only:
    the canonical crop of `face` (a faces.Face, in pixels of the full image) by `geometry`,
    or the whole image resized when either is None."""
    if face is None or geometry is None:
        img, _ = open_rgb(path, image_size)
        return np.asarray(img.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    # The face is a part of the image: decode it whole (a large JPEG at a reduced scale, no
    # smaller than a photo is searched for faces at).
    img, side = open_rgb(path, faces_lib.PHOTO_SIDE)
    return faces_lib.canonical_crop(img, face.scaled(max(img.size) / side), geometry,
                                    image_size)


class ImageReader:
    """Decodes files into the model's input (load_image) and remembers the ones that failed:
    for training's `tf.data` pipeline (pipeline.tf_decode) and inference.py's decoding threads
    alike.

    With a `geometry`, each file whose main face is known (`faces`: {path: faces.Face or
    None}, from `main_faces`) is cut to that geometry's canonical crop; the others are used
    as given. `skipped` maps each unreadable path to the reason, so a script can report them
    at the end.
    """

    def __init__(self, image_size, geometry=None, faces=None):
        self.image_size = image_size
        self.geometry = geometry
        self.faces = faces or {}
        self.skipped = {}
        self._lock = threading.Lock()
        self.as_given = 0.0
        self._rng = None

    def sometimes_as_given(self, share, seed=0):
        """A reader for training that uses `share` of the images with a face as given anyway
        (drawn anew at each read), sharing this one's faces and its record of unreadable
        files. In use, a photo in which no face is found (glare over it, a profile) is scored
        as given: a model trained on face crops alone has never been taught to read one."""
        other = ImageReader(self.image_size, self.geometry, self.faces)
        other.skipped, other._lock = self.skipped, self._lock
        other.as_given, other._rng = share, np.random.default_rng(seed)
        return other

    def face_of(self, path):
        if self.as_given > 0:
            with self._lock:  # decoding threads share the generator
                if self._rng.random() < self.as_given:
                    return None
        return self.faces.get(path)

    def __call__(self, path):
        # Training's pipeline hands over the file system's bytes (pipeline.weighted_examples).
        path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
        try:
            return load_image(path, self.image_size, self.face_of(path), self.geometry), True
        except Exception as err:  # any decoder error means: skip this file, keep the run going
            self.skip(path, err)
            return np.zeros((self.image_size, self.image_size, 3), np.uint8), False

    def skip(self, path, err):
        """Record `path` as unreadable because of `err`, with one warning (the first time)."""
        with self._lock:
            if path not in self.skipped:
                self.skipped[path] = f"{type(err).__name__}: {err}"
                log.warning(f"warning: skipping unreadable image {path} ({err})")


def main_faces(paths, geometry, cache_dir, verbose=1, backend="auto"):
    """{path: its main face (faces.Face), or None where none is found} for an ImageReader that
    cuts `paths` to `geometry`; {} when the geometry is None (as given). Faces come from the
    landmark cache, and are detected once for the files it does not have, by the finder on
    `backend` (faces.face_finder)."""
    if geometry is None:
        return {}
    return dict(zip(paths, faces_lib.find_faces(paths, cache_dir, open_rgb, verbose,
                                                backend=backend)))


def faceless(paths, found, skipped=()):
    """The readable ones of `paths` in which no face was found: used as given."""
    return [p for p in paths if found and found.get(p) is None and p not in skipped]


def first_readable(paths, image_size=32):
    """The first of `paths` that decodes, or None: proof a class has a usable image."""
    for path in paths:
        try:
            load_image(path, image_size)
            return path
        except Exception:
            continue
    return None


# ---------------------------------------------------------------------------
# Training draws: oversampling (pipeline.py turns them into batches)

def oversample_indices(labels, ratio=1.0, seed=0):
    """Indices into `labels` with the minority class repeated up to `ratio` x the majority count.

    `ratio=1.0` balances the classes; `ratio=0` (or anything that would shrink the minority)
    returns every index once. Whole copies come first and the remainder is drawn without
    replacement, so every minority image appears a near-equal number of times.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    target = int(round(ratio * counts.max()))
    indices = np.arange(len(labels))
    extra = target - counts[minority]
    if ratio <= 0 or extra <= 0 or counts[minority] == 0:
        return indices
    rng = np.random.default_rng(seed)
    minority_idx = indices[labels == minority]
    copies, rest = divmod(extra, len(minority_idx))
    added = np.concatenate([np.tile(minority_idx, copies),
                            rng.choice(minority_idx, size=rest, replace=False)])
    return np.concatenate([indices, added])
