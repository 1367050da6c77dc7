"""Predict male/female for new photos with a saved model.

    python predict.py PATH [PATH ...] [--model_path model_balanced.h5] [--output predictions.csv]

Each PATH is an image file or a folder, searched recursively (no class sub-folders needed).
Writes a CSV (path, P(male), label, threshold) and prints a summary. Images are taken as face
crops, as in training; with --detect_faces each photo is first cut into its detected faces
(OpenCV's Haar cascade, shipped inside the opencv-python-headless wheel), one row per face.
--annotate DIR also writes each photo with its faces boxed and labelled, and a contact sheet.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import annotate  # noqa: E402
import cli  # noqa: E402
import data  # noqa: E402
import inference  # noqa: E402
import model as model_lib  # noqa: E402
from common import CLASS_NAMES, DataError, MissingDependency, ModelError  # noqa: E402
from outputs import make_writable_dir, write_csv  # noqa: E402  (ray_engine uses write_csv too)

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Photos are decoded at most this large for detection: the cascade is slow on 20-megapixel
# photos, and a face crop is shrunk to the model's input size anyway.
MAX_PHOTO_SIDE = 1600
# The detector's box runs from brow to chin; face-crop data sets include some hair and chin,
# so each box is widened by this fraction of its size on every side before cropping.
FACE_MARGIN = 0.2
CHUNK = 256  # faces cropped and scored at a time, to bound memory on big folders


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--output", default="predictions.csv", help="CSV file to write")
    p.add_argument("--detect_faces", action="store_true",
                   help="crop each detected face out of the photos first (one row per face)")
    p.add_argument("--min_face_size", type=int, default=40,
                   help="with --detect_faces: smallest face side, in pixels of the photo")
    p.add_argument("--engine", choices=["plain", "ray"], default="plain",
                   help="ray: run as a Ray Data job, resumable, on this machine or a cluster "
                        "(ray_engine.py)")
    p.add_argument("--ray_address", default=None,
                   help="with --engine ray: the cluster to join (host:port or auto); default: "
                        "start Ray on this machine")
    p.add_argument("--annotate", metavar="DIR", default=None,
                   help="also write into DIR a copy of each photo with every face boxed and "
                        "labelled (dashed, with a '?', when P(male) is within "
                        f"{annotate.LOW_CONFIDENCE_BAND} of the threshold) and "
                        "DIR/contact_sheet.jpg of the faces; the photos are never changed")
    cli.add_model_arguments(p)
    args = p.parse_args(argv)
    cli.check_model_arguments(p, args)
    if args.min_face_size < 1:
        p.error("--min_face_size must be at least 1")
    if args.ray_address and args.engine != "ray":
        p.error("--ray_address needs --engine ray")
    if args.annotate:
        check_annotate_folder(p, args)
    return args


def check_annotate_folder(p, args):
    """--annotate DIR must be writable and outside every input folder: copies inside one would
    be read back as photos by the next run. Checked before any work."""
    folder = os.path.realpath(args.annotate)
    for path in args.paths:
        real = os.path.realpath(path)
        if os.path.isdir(path) and (folder == real or folder.startswith(real + os.sep)):
            p.error(f"--annotate {args.annotate}: is inside the input folder {path}, where "
                    "the copies would be read as photos next time; pick a folder outside it")
    try:
        make_writable_dir(args.annotate)
    except OSError as err:
        p.error(f"--annotate {args.annotate}: cannot be written ({err.strerror})")


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

_DETECTOR = None


def load_face_detector():
    """OpenCV's frontal-face Haar cascade from the opencv-python-headless wheel (loaded once).

    Any failure to build it is a MissingDependency naming the cause and the install that fixes
    it: it concerns every photo, so it must stop the run once rather than be mistaken, photo by
    photo, for unreadable files.
    """
    global _DETECTOR
    if _DETECTOR is None:
        try:
            import cv2
        except ImportError as err:
            raise MissingDependency(f"--detect_faces needs OpenCV ({err}); "
                                    "pip install opencv-python-headless") from None
        try:
            path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
            detector = cv2.CascadeClassifier(path)
        except Exception as err:  # e.g. OpenCV 5 has no CascadeClassifier
            raise MissingDependency(
                f"--detect_faces: OpenCV {getattr(cv2, '__version__', '?')} cannot build its "
                f"Haar face detector ({type(err).__name__}: {err}); "
                "pip install 'opencv-python-headless>=4.8,<5'") from None
        if detector.empty():
            raise MissingDependency(f"{path}: OpenCV could not load its face detector; "
                                    "pip install --force-reinstall opencv-python-headless")
        _DETECTOR = detector
    return _DETECTOR


def detect_faces(photo, min_size, detector=None):
    """Face boxes (x, y, w, h) in a PIL RGB image, left to right.

    `detector` has OpenCV's `detectMultiScale`; the default is the Haar cascade.
    """
    import cv2
    detector = detector or load_face_detector()
    grey = cv2.cvtColor(np.asarray(photo), cv2.COLOR_RGB2GRAY)
    grey = cv2.equalizeHist(grey)  # the cascade is trained on contrast-normalised faces
    boxes = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                      minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: (b[0], b[1]))


def crop_box(box, width, height, margin=FACE_MARGIN):
    """The square crop (left, top, right, bottom) around a face box, widened by `margin` on each
    side and moved (then shrunk, if need be) to lie inside a width x height image."""
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = int(min(max(round(cx - side / 2), 0), width - side))
    top = int(min(max(round(cy - side / 2), 0), height - side))
    return left, top, left + side, top + side


def face_crops(photo, scale, image_size, min_face_size, detector):
    """[(box in original pixels, (size, size, 3) uint8 crop)] for each face found in `photo`,
    a photo from `load_photo` and its scale."""
    min_size = max(1, round(min_face_size / scale))
    crops = []
    for box in detect_faces(photo, min_size, detector):
        crop = photo.crop(crop_box(box, *photo.size))
        crop = crop.resize((image_size, image_size), Image.BILINEAR)
        original_box = tuple(int(round(v * scale)) for v in box)
        crops.append((original_box, np.asarray(crop, dtype=np.uint8)))
    return crops


# ---------------------------------------------------------------------------
# Predicting

def label_of(p_male, threshold):
    return CLASS_NAMES[int(p_male >= threshold)]


def csv_header(args):
    """The CSV's columns: a `tta` column says the scores are flip-averaged (--tta)."""
    where = ["path", "face", "x", "y", "w", "h"] if args.detect_faces else ["path"]
    return where + ["p_male", "label", "threshold"] + (["tta"] if args.tta else [])


def score_cells(p_male, threshold, args):
    """The cells after a row's path (and face box): P(male), label, threshold[, tta]."""
    return (f"{p_male:.6f}", label_of(p_male, threshold), f"{threshold:.6g}",
            *(["flip"] if args.tta else []))


def predict_crops(runner, image_size, files, args, threshold):
    """Rows for the faces the model is shown as given: one per readable file; and the skipped."""
    scores, unreadable = inference.score_paths(runner, files, image_size, args.batch_size,
                                               args.verbose)
    rows = [(path, *score_cells(p, threshold, args))
            for path, p in zip(files, scores) if not np.isnan(p)]
    return rows, unreadable, []


def predict_faces(runner, image_size, files, args, threshold, detector=None):
    """Rows for every detected face: one per face; and the skipped files and faceless photos.

    Only decoding a photo may fail per file (it is then skipped); the detector is built before
    the first photo, and an error inside it stops the run with its cause.
    """
    detector = detector or load_face_detector()
    reader = data.ImageReader(image_size)  # records and reports the photos that do not decode
    rows, no_face, pending = [], [], []

    def flush():
        if pending:
            scores = inference.score_images(runner, np.stack([c for _, _, _, c in pending]),
                                            args.batch_size)
            for (path, k, box, _), p in zip(pending, scores):
                rows.append((path, k, *box, *score_cells(p, threshold, args)))
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
            faces = face_crops(photo, scale, image_size, args.min_face_size, detector)
        except Exception as err:
            raise ModelError(f"the face detector failed on {path} ({type(err).__name__}: "
                             f"{err}); check the OpenCV install") from None
        if not faces:
            no_face.append(path)
        pending += [(path, k, box, crop) for k, (box, crop) in enumerate(faces)]
        if len(pending) >= CHUNK:
            flush()
        if args.verbose and n % 100 == 0:
            print(f"  {n}/{len(files)} photos, {len(rows) + len(pending)} faces")
    flush()
    return rows, reader.skipped, no_face


def run(args, detector=None):
    """Predict for every image under `args.paths`; returns a summary dict."""
    files = collect_images(args.paths)
    model = model_lib.load_model(args.model_path, safe_mode=not args.unsafe)
    threshold, source = model_lib.decision_threshold(args.model_path, args.threshold)
    size = model_lib.input_size(model)
    if args.detect_faces:  # a broken detector stops the run here, before any work
        detector = detector or load_face_detector()
    runner = inference.make_runner(model, args.backend, args.precision, args.model_path,
                                   args.cache_dir, threshold=threshold, tta=args.tta)
    what = "photos, cropping detected faces" if args.detect_faces else "face images"
    print(f"predicting {len(files)} {what} at {size}x{size} on {runner.name}, threshold "
          f"{threshold:.2f} ({source})")

    if args.detect_faces:
        rows, skipped, no_face = predict_faces(runner, size, files, args, threshold, detector)
    else:
        rows, skipped, no_face = predict_crops(runner, size, files, args, threshold)
    return finish(args, files, rows, skipped, no_face, threshold, source)


# ---------------------------------------------------------------------------
# --annotate

def write_annotations(args, files, rows, skipped, threshold):
    """A boxed, labelled copy of each readable photo in args.annotate, and the contact sheet of
    every face, drawn from the CSV's rows, so that every engine gets the same pictures.

    Each photo is decoded again as for detection (upright, at most MAX_PHOTO_SIDE), and a
    face's box is the CSV's scaled to it (the whole image without --detect_faces). Returns
    (photos written, the contact sheet's path).
    """
    header = csv_header(args)
    col = {name: k for k, name in enumerate(header)}
    faces = {}
    for row in rows:
        faces.setdefault(row[0], []).append(row)
    photos = [path for path in files if path not in skipped]
    sheet = os.path.join(args.annotate, "contact_sheet.jpg")
    names = annotate.copy_names(photos, args.annotate, avoid=[sheet])
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
            box = ([round(int(row[col[k]]) / scale) for k in "xywh"] if args.detect_faces
                   else [0, 0, *photo.size])
            drawn.append((*box, p_male, label))
            found += 1
            if len(tiles) < annotate.SHEET_MAX_FACES:
                crop = photo.crop(crop_box(box, *photo.size)) if args.detect_faces else photo
                tiles.append(crop.resize((annotate.SHEET_TILE,) * 2, Image.BILINEAR))
                captions.append(annotate.sheet_caption(
                    path, row[col["face"]] if args.detect_faces else None, label, p_male,
                    threshold))
        annotate.save(annotate.draw_faces(photo, drawn, threshold), names[path], quality=92)
        written += 1
    annotate.save(annotate.contact_sheet(tiles, captions, found - len(tiles)), sheet,
                  quality=92)
    return written, sheet


def finish(args, files, rows, skipped, no_face, threshold, source):
    """Write the CSV (and --annotate's pictures) and print the summary (every engine ends
    here); returns the summary dict."""
    if len(skipped) == len(files):
        raise DataError(f"{', '.join(args.paths)}: none of the images could be read")
    header = csv_header(args)
    write_csv(args.output, header, rows)
    annotated = write_annotations(args, files, rows, skipped, threshold) if args.annotate else None

    labels = [row[header.index("label")] for row in rows]
    counts = {name: labels.count(name) for name in CLASS_NAMES}
    unit = "faces" if args.detect_faces else "images"
    print(f"\n{len(rows)} {unit}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    if args.detect_faces:
        print(f"{len(files) - len(skipped) - len(no_face)} of {len(files) - len(skipped)} "
              f"readable photos had a face (smallest side {args.min_face_size} px)")
        if no_face:
            print(f"no face found in {len(no_face)} photo(s):")
            for path in no_face:
                print(f"  {path}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):")
        for path, why in skipped.items():
            print(f"  {path}: {why}")
    print(f"wrote {os.path.abspath(args.output)}")
    if annotated:
        print(f"annotated {annotated[0]} photo(s) in {os.path.abspath(args.annotate)}; faces "
              f"within {annotate.LOW_CONFIDENCE_BAND} of the threshold are dashed, with a '?'; "
              f"contact sheet: {annotated[1]}")
    return {"rows": len(rows), "counts": counts, "threshold": threshold, "source": source,
            "skipped": skipped, "no_face": no_face}


def run_on_ray(args):
    """--engine ray: ray_engine.run, whose driver and actors find the cache root in
    $FACEGENDER_CACHE (it is passed on to every node)."""
    try:
        import ray  # noqa: F401
        import ray_engine
    except ImportError as err:
        raise MissingDependency(f"--engine ray needs Ray ({err}); pip install 'ray[data]'"
                                ) from None
    os.environ["FACEGENDER_CACHE"] = args.cache_dir
    return ray_engine.run(args)


def main(argv=None):
    args = parse_args(argv)
    return cli.exit_code(run_on_ray if args.engine == "ray" else run, args)


if __name__ == "__main__":
    sys.exit(main())
