"""Photos scored into the CSV's rows, the work that predict.py runs on this machine and
ray_engine.py's actors run on theirs, so both give the same rows: images taken as one face
each (predict_crops), or cut into every face found in them (predict_faces).

Each photo is decoded upright (inputs.py), its faces found and cut to the model's crop
(photo_faces.py), the crops scored a chunk at a time, and each score thresholded into a row
(csv_rows.py); results.py writes the rows at the end.
"""

import logging

import numpy as np

from facegender.core.common import ModelError
from facegender.data import decoding
from facegender.labelling.csv_rows import score_cells
from facegender.labelling.inputs import load_photo
from facegender.labelling.photo_faces import face_crops, load_face_detector
from facegender.runtime import inference

log = logging.getLogger(__name__)

CHUNK = 256  # faces cropped and scored at a time, to bound memory on big folders


def searches_faces(config, geometry):
    """Whether every image is searched for a face: always when the model names a face
    geometry (its faces are cut to it), on request (--detect_faces, or videos) otherwise. An
    image that is not searched is taken to be one face, as the user gave it."""
    return bool(config.detect_faces or geometry is not None)


def what_is_predicted(config, files, videos, geometry):
    """The inputs in words, for the line that starts the work (predict.py, Ray alike)."""
    if config.detect_faces:
        what = f"{len(files)} photo(s), cutting out every face found"
    elif geometry is not None:
        what = f"{len(files)} face image(s), each searched for its face"
    else:
        what = (f"{len(files)} face image(s), each taken as one face (the model names no face "
                "geometry; --detect_faces searches them)")
    if videos:
        what = ((what + ", and ") if files else "") + (
            f"{len(videos)} video(s), a frame every {config.every:g} second(s)")
    return what


def predict_crops(runner, image_size, files, config, threshold, geometry=None):
    """Rows for images of one face each, cut to the model's `geometry` (None: as given): one
    per readable file; the skipped files; the ones in which no face was found (scored whole,
    their rows' face_found false)."""
    found = decoding.main_faces(files, geometry, config.cache_dir, config.verbose, config.backend)
    reader = decoding.ImageReader(image_size, geometry, found)
    scores, unreadable = inference.score_paths(runner, files, image_size, config.batch_size,
                                               config.verbose, reader=reader)
    rows = [(path, *score_cells(p, threshold, config, not found or found.get(path) is not None))
            for path, p in zip(files, scores) if not np.isnan(p)]
    return rows, unreadable, decoding.faceless(files, found, unreadable)


def predict_faces(runner, image_size, files, config, threshold, detector=None, geometry=None):
    """Rows for every detected face, cut to the model's `geometry`: one per face, and one for
    each photo in which no face was found (the whole photo scored, its box the whole photo,
    face_found false); and the skipped files and faceless photos.

    Only decoding a photo may fail per file (it is then skipped); the detector is built before
    the first photo, and an error inside it stops the run with its cause.
    """
    detector = detector or load_face_detector(config.cache_dir, config.backend)
    reader = decoding.ImageReader(image_size)  # records and reports the photos that do not decode
    rows, no_face, pending = [], [], []

    def flush():
        if pending:
            scores = inference.score_images(runner, np.stack([c for _, _, _, c in pending]),
                                            config.batch_size)
            for (path, k, box, _), p in zip(pending, scores):
                rows.append((path, k, *box, *score_cells(p, threshold, config, k != "")))
            pending.clear()

    for n, path in enumerate(files, 1):
        try:
            photo, scale = load_photo(path)
        except MemoryError:
            raise
        except Exception as err:  # any decoder error means: skip this file, keep the run going
            reader.skip(path, err)
            continue
        try:
            faces = face_crops(photo, scale, image_size, config.min_face_size, detector, geometry)
        except Exception as err:
            raise ModelError(f"the face detector failed on {path} ({type(err).__name__}: "
                             f"{err}); check the mtcnn install") from None
        if not faces:
            # Scored whole, as an image given as one face is, and kept as a row that is not
            # counted: a user sees what it was called, and that it was left out.
            try:
                whole = decoding.load_image(path, image_size)
            except Exception as err:  # it decoded a moment ago: changed since
                reader.skip(path, err)
                continue
            no_face.append(path)
            width, height = (round(side * scale) for side in photo.size)
            pending.append((path, "", (0, 0, width, height), whole))
        pending += [(path, k, box, crop) for k, (box, crop) in enumerate(faces)]
        if len(pending) >= CHUNK:
            flush()
        if config.verbose and n % 100 == 0:
            log.info(f"  {n}/{len(files)} photos, {len(rows) + len(pending)} faces")
    flush()
    return rows, reader.skipped, no_face
