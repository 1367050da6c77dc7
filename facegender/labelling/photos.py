"""Labelling photos: the pipeline that predict.py runs, on this machine or on Ray's workers.

List the images, decode each photo upright, find its faces (MTCNN, faces.py) or take the
image as one face, cut each face to the model's geometry, score the crops, threshold them into
CSV rows, and at the end write the CSV, the annotated copies and the summary. `predict.py` (the
command) and `ray_engine.py` (the same work as a Ray job) both call these functions, so
both give the same rows.
"""

import os
import sys

import numpy as np
from PIL import Image

from facegender.drawing import annotate
from facegender.data import images as data
from facegender.faces import finder as faces_lib
from facegender.runtime import inference
from facegender.core.common import CLASS_NAMES, DataError, ModelError
from facegender.core.outputs import write_csv

# Photos are decoded at most this large for detection: the finder is slow on 20-megapixel
# photos, and a face crop is shrunk to the model's input size anyway.
MAX_PHOTO_SIDE = faces_lib.PHOTO_SIDE
# The finder's box runs from brow to chin. A model trained on crops as given (no geometry in
# its sidecar) saw some hair and chin, so its faces are this box widened by this fraction of
# its size on every side, as before the finder had landmarks.
FACE_MARGIN = 0.2
AS_GIVEN_BOX = faces_lib.Geometry("box", 1 + 2 * FACE_MARGIN)
CHUNK = 256  # faces cropped and scored at a time, to bound memory on big folders



# ---------------------------------------------------------------------------
# Inputs

def collect_images(paths):
    """Image files named by `paths` (files as given, folders searched recursively), each once."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += data.list_image_files(path)
        elif os.path.isfile(path):
            found.append(path)  # named explicitly: tried whatever its extension
        else:
            raise DataError(f"{path}: no such file or folder; pass image files or folders")
    found = list(dict.fromkeys(found))
    if not found:
        raise DataError(f"{', '.join(paths)}: no images found "
                        f"({', '.join(data.IMAGE_EXTENSIONS)}); check the path")
    return found


def load_photo(path, max_side=MAX_PHOTO_SIDE):
    """Decode a whole photo, upright, RGB, at most `max_side` pixels on its long side.

    Returns (PIL image, scale): multiply a box in the returned image by scale to get it in
    pixels of the original (upright) photo.
    """
    img, original = data.open_rgb(path, max_side)
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img, original / max(img.size)


# ---------------------------------------------------------------------------
# Faces

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


# ---------------------------------------------------------------------------
# Predicting

def label_of(p_male, threshold):
    return CLASS_NAMES[int(p_male >= threshold)]


def searches_faces(config, geometry):
    """Whether every image is searched for a face: always when the model names a face
    geometry (its faces are cut to it), on request (--detect_faces, or videos) otherwise. An
    image that is not searched is taken to be one face, as the user gave it."""
    return bool(config.detect_faces or geometry is not None)


def csv_header(config):
    """The CSV's columns: a `tta` column says the scores are flip-averaged (--tta); a `time`
    column (seconds into the video; empty for a photo) and a last `track` column (the face's
    appearance in its video, tracks.py; empty for a photo) come with videos (video.py); a
    `face_found` column (true, or false for an image in which none was found, scored whole
    and not counted) whenever the images are searched for faces (config.faces_searched)."""
    where = ["path", "face", "x", "y", "w", "h"] if config.detect_faces else ["path"]
    videos = config.videos
    if videos:
        where.insert(1, "time")
    found = ["face_found"] if config.faces_searched else []
    return (where + found + ["p_male", "label", "threshold"] + (["tta"] if config.tta else [])
            + (["track"] if videos else []))


def score_cells(p_male, threshold, config, face_found=True):
    """The cells after a row's path (and face box): [face_found,] P(male), label,
    threshold[, tta]."""
    found = ([str(bool(face_found)).lower()]
             if config.faces_searched else [])
    return (*found, f"{p_male:.6f}", label_of(p_male, threshold), f"{threshold:.6g}",
            *(["flip"] if config.tta else []))


def counted(rows, header):
    """The rows that are faces: all but those of images in which no face was found."""
    if "face_found" not in header:
        return list(rows)
    k = header.index("face_found")
    return [row for row in rows if row[k] != "false"]


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
    found = data.main_faces(files, geometry, config.cache_dir, config.verbose, config.backend)
    reader = data.ImageReader(image_size, geometry, found)
    scores, unreadable = inference.score_paths(runner, files, image_size, config.batch_size,
                                               config.verbose, reader=reader)
    rows = [(path, *score_cells(p, threshold, config, not found or found.get(path) is not None))
            for path, p in zip(files, scores) if not np.isnan(p)]
    return rows, unreadable, data.faceless(files, found, unreadable)


def predict_faces(runner, image_size, files, config, threshold, detector=None, geometry=None):
    """Rows for every detected face, cut to the model's `geometry`: one per face, and one for
    each photo in which no face was found (the whole photo scored, its box the whole photo,
    face_found false); and the skipped files and faceless photos.

    Only decoding a photo may fail per file (it is then skipped); the detector is built before
    the first photo, and an error inside it stops the run with its cause.
    """
    detector = detector or load_face_detector(config.cache_dir, config.backend)
    reader = data.ImageReader(image_size)  # records and reports the photos that do not decode
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
                whole = data.load_image(path, image_size)
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
            print(f"  {n}/{len(files)} photos, {len(rows) + len(pending)} faces")
    flush()
    return rows, reader.skipped, no_face


# ---------------------------------------------------------------------------
# --annotate

def write_annotations(config, files, rows, skipped, threshold):
    """A boxed, labelled copy of each readable photo in config.annotate, and the contact sheet of
    every face, drawn from the CSV's rows, so that every engine gets the same pictures.

    Each photo is decoded again as for detection (upright, at most MAX_PHOTO_SIDE), and a
    face's box is the CSV's scaled to it (the whole image without --detect_faces). Returns
    (photos written, the contact sheet's path).
    """
    header = csv_header(config)
    col = {name: k for k, name in enumerate(header)}
    faces = {}
    for row in counted(rows, header):  # an image without a face gets no box
        faces.setdefault(row[0], []).append(row)
    photos = [path for path in files if path not in skipped]
    sheet = os.path.join(config.annotate, "contact_sheet.jpg")
    names = annotate.copy_names(photos, config.annotate, avoid=[sheet])
    tiles, captions, found, written = [], [], 0, 0
    for path in photos:
        try:
            photo, scale = load_photo(path)
        except Exception as err:  # it decoded a moment ago: changed since; the CSV stands
            print(f"warning: could not annotate {path} ({err})", file=sys.stderr)
            continue
        drawn = []
        for row in faces.get(path, []):
            p_male, label = float(row[col["p_male"]]), row[col["label"]]
            box = ([round(int(row[col[k]]) / scale) for k in "xywh"] if config.detect_faces
                   else [0, 0, *photo.size])
            drawn.append((*box, p_male, label))
            found += 1
            if len(tiles) < annotate.SHEET_MAX_FACES:
                crop = photo.crop(crop_box(box, *photo.size)) if config.detect_faces else photo
                tiles.append(crop.resize((annotate.SHEET_TILE,) * 2, Image.BILINEAR))
                captions.append(annotate.sheet_caption(
                    path, row[col["face"]] if config.detect_faces else None, label, p_male,
                    threshold))
        annotate.save(annotate.draw_faces(photo, drawn, threshold), names[path], quality=92)
        written += 1
    annotate.save(annotate.contact_sheet(tiles, captions, found - len(tiles)), sheet,
                  quality=92)
    return written, sheet


def finish(config, photos, videos, rows, skipped, no_face, threshold, source):
    """Write the CSV (and --annotate's pictures of photos) and print the summary (every engine
    ends here, then writes its videos' tracks: video.finish_tracks); returns the summary dict.
    Rows of images in which no face was found are written and named, and left out of the
    counts."""
    files = photos + videos
    if len(skipped) == len(files):
        raise DataError(f"{', '.join(config.paths)}: none of the "
                        f"{'files' if videos else 'images'} could be read")
    header = csv_header(config)
    write_csv(config.output, header, rows)
    annotated = (write_annotations(config, photos, rows, skipped, threshold)
                 if config.annotate and photos else None)

    faces = counted(rows, header)
    labels = [row[header.index("label")] for row in faces]
    counts = {name: labels.count(name) for name in CLASS_NAMES}
    searched = "face_found" in header
    unit = "faces" if searched else "images"
    print(f"\n{len(faces)} {unit}: " + ", ".join(f"{n} {name}" for name, n in counts.items())
          if faces else f"\nno faces found: nothing to count among {len(files)} file(s)")
    if config.detect_faces:
        faceless = set(no_face)
        kinds = []
        for name, paths in (("photos", photos), ("videos", videos)):
            if paths or (name == "photos" and not videos):
                readable = [p for p in paths if p not in skipped]
                found = sum(p not in faceless for p in readable)
                kinds.append(f"{found} of {len(readable)} readable {name}")
        print(f"{' and '.join(kinds)} had a face (smallest side {config.min_face_size} px)")
    video_set = set(videos)
    whole = [path for path in no_face if path not in video_set]
    if whole:
        print(f"{len(whole)} image(s) without a face found: scored whole, not counted "
              "(face_found false in the CSV):")
        for path in whole:
            print(f"  {path}")
    if faceless_videos := [path for path in no_face if path in video_set]:
        print(f"{len(faceless_videos)} video(s) without a face found in a sampled frame:")
        for path in faceless_videos:
            print(f"  {path}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable {'file' if videos else 'image'}(s):")
        for path, why in skipped.items():
            print(f"  {path}: {why}")
    print(f"wrote {os.path.abspath(config.output)}")
    if annotated:
        print(f"annotated {annotated[0]} photo(s) in {os.path.abspath(config.annotate)}; faces "
              f"within {annotate.LOW_CONFIDENCE_BAND} of the threshold are dashed, with a '?'; "
              f"contact sheet: {annotated[1]}")
    return {"rows": len(rows), "faces": len(faces), "counts": counts, "threshold": threshold,
            "source": source, "skipped": skipped, "no_face": no_face}
