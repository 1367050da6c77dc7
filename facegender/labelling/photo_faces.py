"""The faces of a photo: found by the face finder (MTCNN, facegender.faces) and cut to the
crop the model was trained on, with their boxes in pixels of the original photo."""

import numpy as np

from facegender.faces import finder as faces_lib

# The finder's box runs from brow to chin. A model trained on crops as given (no geometry in
# its sidecar) saw some hair and chin, so its faces are this box widened by this fraction of
# its size on every side, as before the finder had landmarks.
FACE_MARGIN = 0.2
AS_GIVEN_BOX = faces_lib.Geometry("box", 1 + 2 * FACE_MARGIN)


def load_face_detector(cache_dir=None, backend="auto"):
    """The face finder (faces.face_finder: MTCNN, on OpenVINO unless `backend` is 'keras' or
    OpenVINO is not installed), loaded once; a MissingDependency saying what to install when it
    cannot be: it concerns every photo, so it stops the run once rather than being mistaken,
    photo by photo, for unreadable files."""
    return faces_lib.face_finder(cache_dir, backend)


def detect_faces(photo, min_size, detector=None):
    """The faces (faces.Face) in a PIL RGB image, left to right. `detector` has
    faces.FaceFinder's `find`; the default is load_face_detector's."""
    detector = detector or load_face_detector()
    found = detector.find([np.asarray(photo)], min_face_size=max(min_size, 12))[0]
    return sorted(found, key=lambda face: (face.box[0], face.box[1]))


def crop_box(box, width, height, margin=FACE_MARGIN):
    """The square crop (left, top, right, bottom) around a face box, widened by `margin` on each
    side and moved (then shrunk, if need be) to lie inside a width x height image."""
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return left, top, left + side, top + side


def face_crops(photo, scale, image_size, min_face_size, detector, geometry=None):
    """[(box in original pixels, (size, size, 3) uint8 crop)] for each face found in `photo`,
    a photo from `load_photo` and its scale, cut by `geometry` (None: the model takes faces as
    given, so the box with a margin, AS_GIVEN_BOX)."""
    return [(box, crop) for box, crop, _ in found_faces(photo, scale, image_size,
                                                        min_face_size, detector, geometry)]


def found_faces(photo, scale, image_size, min_face_size, detector, geometry=None):
    """face_crops' faces with their five landmarks too: [(box, crop, (5, 2) landmarks)], box
    and landmarks in pixels of the original (video.py tracks faces by them)."""
    min_size = max(1, round(min_face_size / scale))
    found = []
    for face in detect_faces(photo, min_size, detector):
        crop = faces_lib.canonical_crop(photo, face, geometry or AS_GIVEN_BOX, image_size)
        original_box = tuple(int(round(v * scale)) for v in face.box)
        found.append((original_box, crop, np.asarray(face.landmarks, float) * scale))
    return found
