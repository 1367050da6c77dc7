"""Predict male/female for new photos with a saved model.

    python predict.py PATH [PATH ...] [--model_path model_balanced.h5] [--output predictions.csv]

Each PATH is an image file or a folder, searched recursively (no class sub-folders needed).
Writes a CSV (path, P(male), label, threshold) and prints a summary. Each image is taken as a
photo of one face, found (MTCNN) and cut to the crop the model was trained on (its sidecar's
face geometry); with --detect_faces each photo is cut into every face found in it, one row
per face.
--annotate DIR also writes each photo with its faces boxed and labelled, and a contact sheet.
"""
import argparse
import os
import sys

import quiet

quiet.hide_tensorflow_start_up()  # TensorFlow is imported only where needed, and quietly

import annotate  # noqa: E402
import cli  # noqa: E402
import inference  # noqa: E402
import labelling  # noqa: E402
import sidecar  # noqa: E402
from common import MissingDependency  # noqa: E402
from outputs import make_writable_dir  # noqa: E402


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
    check_output(p, args)
    return args


def check_output(p, args):
    """--output is a new CSV, never an input: it must end in .csv (so it is not a photo, the
    model or its sidecar) and not be a file named on the command line. Checked before any
    work, so that nothing a user has is overwritten."""
    if not args.output.lower().endswith(".csv"):
        p.error(f"--output {args.output}: must end in .csv (the predictions are a CSV; this "
                "keeps a photo or a model from being written over)")
    out = os.path.realpath(args.output)
    for path in args.paths:
        if out == os.path.realpath(path):
            p.error(f"--output {args.output}: is an input ({path}); write the CSV elsewhere")
    if os.path.isdir(out):
        p.error(f"--output {args.output}: is a folder; name a .csv file")


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


def run(args, detector=None):
    """Predict for every image under `args.paths`; returns a summary dict."""
    files = labelling.collect_images(args.paths)
    inference.check_backend(args.backend, args.precision)
    threshold, source = sidecar.decision_threshold(args.model_path, args.threshold)
    geometry = sidecar.face_geometry(args.model_path)
    runner, size = inference.load_runner(args.model_path, args.backend, args.precision,
                                         args.cache_dir, threshold, args.tta, not args.unsafe)
    if args.detect_faces:  # a broken detector stops the run here, before any work
        detector = detector or labelling.load_face_detector()
    what = "photos, cropping detected faces" if args.detect_faces else "face images"
    print(f"predicting {len(files)} {what} at {size}x{size} on {runner.name}, threshold "
          f"{threshold:.2f} ({source}); face crop: {geometry or 'as given'}")

    if args.detect_faces:
        rows, skipped, no_face = labelling.predict_faces(runner, size, files, args, threshold,
                                                         detector, geometry)
    else:
        rows, skipped, no_face = labelling.predict_crops(runner, size, files, args, threshold,
                                                         geometry)
    return labelling.finish(args, files, rows, skipped, no_face, threshold, source)


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
    if args.verbose == 2:
        quiet.show_tensorflow_start_up()
    return cli.exit_code(run_on_ray if args.engine == "ray" else run, args)


if __name__ == "__main__":
    sys.exit(main())
