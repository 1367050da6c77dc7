"""Decoding image files into the model's input, with no TensorFlow (the `tf.data` pipeline that
feeds training is pipeline.py), so that scoring on OpenVINO never imports it.

Images are decoded with Pillow (in inference.py's threads and inside training's `tf.data`
pipeline alike): Pillow reads every format people actually have (JPEG, PNG, BMP, GIF, WebP,
CMYK, 16-bit, palette), honours the EXIF orientation tag, and lets a file that cannot be
decoded be reported by name and skipped instead of crashing a run after minutes of work. With a
face geometry, each image is cut to its main face's canonical crop (faces.finder).
"""

import logging
import os
import threading

import numpy as np
from PIL import Image, ImageOps

from facegender.faces import finder as faces_lib

log = logging.getLogger(__name__)


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
