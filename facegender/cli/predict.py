"""Predict male/female for new photos with a saved model.

    python predict.py PATH [PATH ...] [--model_path model_balanced.h5] [--output predictions.csv]

Each PATH is an image or video file or a folder, searched recursively (no class sub-folders
needed); a video is searched for faces in a frame every --every seconds.
Writes a CSV (path, [face_found,] P(male), label, threshold) and prints a summary. Each image is
taken as a photo of one face, found (MTCNN) and cut to the crop the model was trained on (its
sidecar's face geometry); with --detect_faces each photo is cut into every face found in it, one
row per face. Only faces are counted: an image in which no face is found keeps its row
(face_found false, the whole image scored) and is named, but left out of the counts.
--annotate DIR also writes each photo with its faces boxed and labelled, and a contact sheet.
Beside the CSV, <output>.summary.json: the share of women, raw and corrected for the model's
error rates (--audit_sample DIR, else its sidecar's), with 95% intervals (audit.py).
"""
import argparse
import os
import shlex
import sys

import quiet

quiet.hide_tensorflow_start_up()  # TensorFlow is imported only where needed, and quietly

import annotate  # noqa: E402
import audit  # noqa: E402
import cli  # noqa: E402
import gallery  # noqa: E402
import inference  # noqa: E402
import labelling  # noqa: E402
import sidecar  # noqa: E402
import video  # noqa: E402
from common import DataError, MissingDependency, UsageError  # noqa: E402
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
                   help="ray: run as a Ray job, resumable, on this machine or a cluster "
                        "(ray_engine.py)")
    p.add_argument("--ray_address", default=None,
                   help="with --engine ray: the cluster to join (host:port or auto); default: "
                        "start Ray on this machine")
    p.add_argument("--ray_join_timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --ray_address: give up, with one line, when the cluster has not "
                        "let us join within this time")
    p.add_argument("--annotate", metavar="DIR", default=None,
                   help="also write into DIR a copy of each photo with every face boxed and "
                        "labelled (dashed, with a '?', when P(male) is within "
                        f"{annotate.LOW_CONFIDENCE_BAND} of the threshold) and "
                        "DIR/contact_sheet.jpg of the faces; for a video, a sheet of its "
                        "frames with each face's track number and label; inputs are never "
                        "changed")
    p.add_argument("--every", type=float, default=0.5, metavar="SECONDS",
                   help="for videos: seconds of video between the frames searched for faces; "
                        "each face found stands for this much screen time (0.5: dense enough "
                        "to follow faces into tracks, docs/usage.md)")
    p.add_argument("--report", metavar="FILE.html", default=None,
                   help="also write one self-contained HTML page: the counts, the shares by "
                        "folder, a figure and the faces as the model saw them")
    p.add_argument("--audit_sample", metavar="DIR", default=None,
                   help="a labelled random sample of this collection (female/ and male/, one "
                        "face an image), scored first: its error rates correct the share of "
                        "women in the summary, instead of the sidecar's")
    cli.add_model_arguments(p)
    args = p.parse_args(argv)
    cli.check_model_arguments(p, args)
    if args.min_face_size < 1:
        p.error("--min_face_size must be at least 1")
    if not args.every > 0:
        p.error("--every must be a number of seconds above 0")
    if args.report and not args.report.lower().endswith((".html", ".htm")):
        p.error(f"--report {args.report}: must end in .html")
    if args.audit_sample and not os.path.isdir(args.audit_sample):
        p.error(f"--audit_sample {args.audit_sample}: not a folder; pass one holding female/ "
                "and male/")
    if args.ray_address and args.engine != "ray":
        p.error("--ray_address needs --engine ray")
    if not args.ray_join_timeout > 0:
        p.error(f"--ray_join_timeout {args.ray_join_timeout:g}: must be above 0 seconds")
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


def check_videos(args, files, videos):
    """Videos are searched for faces frame by frame, one row per face: they imply
    --detect_faces, and photos beside them are cut into every face found too, for one CSV's
    columns (said in a note)."""
    if not videos:
        return
    if files and not args.detect_faces:
        print(f"note: {len(videos)} video(s) among the photos: every photo is searched for "
              "faces too, one row per face (as --detect_faces)")
    args.detect_faces = args.videos = True


def predict_videos(runner, size, videos, args, threshold, detector, geometry, skipped):
    """Rows of every face in `videos` and the videos in which none was found. A video that
    cannot be read (damaged, truncated, not a video) is named, added to `skipped` and passed
    over, as an unreadable photo is, and the others go on."""
    rows, no_face = [], []
    for path in videos:
        try:
            found = video.predict_video(runner, size, path, args, threshold, detector, geometry)
        except DataError as err:
            why = str(err).removeprefix(f"{path}: ")  # named once, where it is listed
            skipped[path] = why
            print(f"warning: skipping unreadable video {path} ({why})", file=sys.stderr)
            continue
        rows += found
        no_face += [] if found else [path]
    return rows, no_face


def run(args, detector=None):
    """Predict for every image and video under `args.paths`; returns a summary dict."""
    files, videos = video.collect_inputs(args.paths)
    check_videos(args, files, videos)
    inference.check_backend(args.backend, args.precision)
    threshold, source = sidecar.decision_threshold(args.model_path, args.threshold)
    geometry = sidecar.face_geometry(args.model_path)
    args.searched = labelling.searches_faces(args, geometry)
    runner, size = inference.load_runner(args.model_path, args.backend, args.precision,
                                         args.cache_dir, threshold, args.tta, not args.unsafe)
    if args.detect_faces:  # a broken detector stops the run here, before any work
        detector = detector or labelling.load_face_detector(args.cache_dir, args.backend)
    # Which error rates correct the count: chosen (and an unusable sample refused) first.
    rates, note = audit.choose_rates(args, threshold, lambda folder: audit.sample_rates(
        folder, runner, size, geometry, threshold, args))
    what = labelling.what_is_predicted(args, files, videos, geometry)
    print(f"predicting {what} at {size}x{size} on {runner.name}, threshold {threshold:.2f} "
          f"({source}); face crop: {geometry or 'as given'}")

    rows, skipped, no_face = [], {}, []
    if files and args.detect_faces:
        rows, skipped, no_face = labelling.predict_faces(runner, size, files, args, threshold,
                                                         detector, geometry)
    elif files:
        rows, skipped, no_face = labelling.predict_crops(runner, size, files, args, threshold,
                                                         geometry)
    if videos:
        rows = [(row[0], "", *row[1:], "") for row in rows]  # a photo: no time, no track
        found, faceless = predict_videos(runner, size, videos, args, threshold, detector,
                                         geometry, skipped)
        rows += found
        no_face += faceless
    summary = labelling.finish(args, files, videos, rows, skipped, no_face, threshold, source)
    if videos:  # one row per track beside the CSV, and --annotate's frames
        video.finish_tracks(args, labelling.csv_header(args), rows, videos, skipped, threshold)
    video.remove_progress(args.output)
    summary["audit"] = audit.summarize(args, rates, note, every=args.every if videos else None,
                                       threshold=threshold)
    if args.report:
        write_report(args, summary, rates, threshold, size, geometry, detector)
    return summary


def write_report(args, summary, rates, threshold, size=None, geometry=None, detector=None):
    """--report: the audit's page, with the faces nearest the threshold (and the sample's
    mistakes) cut again as they were scored; what is not given is loaded here (Ray's driver)."""
    import report
    if size is None:
        size = inference.load_runner(args.model_path, args.backend, args.precision,
                                     args.cache_dir, threshold, args.tta, not args.unsafe)[1]
        geometry = sidecar.face_geometry(args.model_path)
        detector = (labelling.load_face_detector(args.cache_dir, args.backend)
                    if args.detect_faces else None)
    tiles = gallery.faces_to_show(args, rates, threshold, size, geometry, detector)
    strips = (video.timelines(audit.read_rows(args.output), args.every)
              if "video" in summary["audit"] else None)
    print(f"wrote {report.write(args.report, report.audit_page(summary['audit'], tiles, strips))}")


def run_on_ray(args):
    """--engine ray: ray_engine.run, whose driver and actors find the cache root in
    $FACEGENDER_CACHE (it is passed on to every node)."""
    try:
        import ray  # noqa: F401
        import ray_engine
    except ImportError as err:
        raise MissingDependency(f"--engine ray needs Ray ({err}); pip install ray"
                                ) from None
    os.environ["FACEGENDER_CACHE"] = args.cache_dir
    files, videos = video.collect_inputs(args.paths)
    check_videos(args, files, videos)
    threshold, _ = sidecar.decision_threshold(args.model_path, args.threshold)
    rates, note = audit.choose_rates(args, threshold, lambda folder: sample_on_driver(
        folder, args, threshold))
    summary = ray_engine.run(args)
    if summary.get("stopped"):
        return summary
    summary["audit"] = audit.summarize(args, rates, note, every=args.every if videos else None,
                                       threshold=threshold)
    if args.report:  # the gallery's few faces are cut again here, on the driver
        write_report(args, summary, rates, threshold)
    return summary


def sample_on_driver(folder, args, threshold):
    """--audit_sample with --engine ray: the sample is small, so it is scored here."""
    runner, size = inference.load_runner(args.model_path, args.backend, args.precision,
                                         args.cache_dir, threshold, args.tta, not args.unsafe)
    return audit.sample_rates(folder, runner, size, sidecar.face_geometry(args.model_path),
                              threshold, args)


def main(argv=None):
    args = parse_args(argv)
    # The command, as the audit's summary and page record it.
    args.command = " ".join(shlex.quote(a) for a in
                            ["predict.py", *(sys.argv[1:] if argv is None else argv)])
    if args.verbose == 2:
        quiet.show_tensorflow_start_up()
    return cli.exit_code(run_on_ray if args.engine == "ray" else run, args)


if __name__ == "__main__":
    sys.exit(main())
