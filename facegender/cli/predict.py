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

This module is the command line only: it parses the flags into a `LabelConfig`, hands it to
facegender.labelling.label and prints the result it returns.
"""

import dataclasses
import os
import shlex
import sys

from facegender.cli import options as cli
from facegender.core import quiet
from facegender.core.outputs import make_writable_dir
from facegender.drawing.annotate import LOW_CONFIDENCE_BAND
from facegender.labelling import audit, label, results, video
from facegender.labelling.config import LabelConfig
from facegender.runtime.options import defaults_of

GROUPS = ("inputs and outputs", "faces and video", "audit", "model", "engine")
DEFAULTS = defaults_of(LabelConfig)  # each flag's default, stated once: in LabelConfig


def build_parser():
    """predict.py's flags, in their groups."""
    p, groups = cli.parser(__doc__.split("\n\n")[0], GROUPS)
    g = groups["inputs and outputs"]
    g.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    g.add_argument("--output", default=DEFAULTS["output"], help="CSV file to write")
    g.add_argument("--annotate", metavar="DIR", default=DEFAULTS["annotate"],
                   help="also write into DIR a copy of each photo with every face boxed and "
                        "labelled (dashed, with a '?', when P(male) is within "
                        f"{LOW_CONFIDENCE_BAND} of the threshold) and "
                        "DIR/contact_sheet.jpg of the faces; for a video, a sheet of its "
                        "frames with each face's track number and label; inputs are never "
                        "changed")
    g.add_argument("--report", metavar="FILE.html", default=DEFAULTS["report"],
                   help="also write one self-contained HTML page: the counts, the shares by "
                        "folder, a figure and the faces as the model saw them")
    g = groups["faces and video"]
    g.add_argument("--detect_faces", action="store_true",
                   help="crop each detected face out of the photos first (one row per face)")
    g.add_argument("--min_face_size", type=int, default=DEFAULTS["min_face_size"],
                   help="with --detect_faces: smallest face side, in pixels of the photo")
    g.add_argument("--every", type=float, default=DEFAULTS["every"], metavar="SECONDS",
                   help="for videos: seconds of video between the frames searched for faces; "
                        "each face found stands for this much screen time; the frames must be "
                        "close enough for faces to be followed into tracks (docs/usage.md)")
    groups["audit"].add_argument(
        "--audit_sample", metavar="DIR", default=DEFAULTS["audit_sample"],
        help="a labelled random sample of this collection (female/ and male/, one face an "
             "image), scored first: its error rates correct the share of women in the "
             "summary, instead of the sidecar's")
    g = groups["engine"]
    g.add_argument("--engine", choices=["plain", "ray"], default=DEFAULTS["engine"],
                   help="ray: run as a Ray job, resumable, on this machine or a cluster "
                        "(facegender/labelling/ray_engine.py)")
    g.add_argument("--ray_address", default=DEFAULTS["ray_address"],
                   help="with --engine ray: the cluster to join (host:port or auto); default: "
                        "start Ray on this machine")
    g.add_argument("--ray_join_timeout", type=float, default=DEFAULTS["ray_join_timeout"],
                   metavar="SECONDS",
                   help="with --ray_address: give up, with one line, when the cluster has not "
                        "let us join within this time")
    cli.add_model_arguments(groups["model"], groups["engine"])
    return p


def parse_args(argv=None):
    """The command line as a checked, frozen LabelConfig."""
    p = build_parser()
    config = cli.config_from(p, LabelConfig, argv)  # LabelConfig checks the ranges
    check_paths(p, config)
    return config


def check_paths(p, config):
    """The folders and files the flags name, before any work (`p.error` on the first wrong
    one): the sample exists, the annotated copies and the CSV can be written where asked."""
    if config.audit_sample and not os.path.isdir(config.audit_sample):
        p.error(f"--audit_sample {config.audit_sample}: not a folder; pass one holding female/ "
                "and male/")
    if config.annotate:
        check_annotate_folder(p, config)
    check_output(p, config)


def check_output(p, config):
    """--output is a new CSV, never an input: it must end in .csv (so it is not a photo, the
    model or its sidecar) and not be a file named on the command line. Checked before any
    work, so that nothing a user has is overwritten."""
    if not config.output.lower().endswith(".csv"):
        p.error(f"--output {config.output}: must end in .csv (the predictions are a CSV; this "
                "keeps a photo or a model from being written over)")
    out = os.path.realpath(config.output)
    for path in config.paths:
        if out == os.path.realpath(path):
            p.error(f"--output {config.output}: is an input ({path}); write the CSV elsewhere")
    if os.path.isdir(out):
        p.error(f"--output {config.output}: is a folder; name a .csv file")


def check_annotate_folder(p, config):
    """--annotate DIR must be writable and outside every input folder: copies inside one would
    be read back as photos by the next run. Checked before any work."""
    folder = os.path.realpath(config.annotate)
    for path in config.paths:
        real = os.path.realpath(path)
        if os.path.isdir(path) and (folder == real or folder.startswith(real + os.sep)):
            p.error(f"--annotate {config.annotate}: is inside the input folder {path}, where "
                    "the copies would be read as photos next time; pick a folder outside it")
    try:
        make_writable_dir(config.annotate)
    except OSError as err:
        p.error(f"--annotate {config.annotate}: cannot be written ({err.strerror})")


def print_result(result):
    """What the run found and wrote, in the order a run makes it: the counts, the files
    without a face or unreadable, the CSV, the annotated copies; the videos' tracks; Ray's rows
    per node; the audit; the --report page."""
    print(results.result_text(result))
    if result.tracks is not None:
        print(video.tracks_text(result.tracks))
    if result.per_node is not None:
        from facegender.labelling import ray_engine
        print(ray_engine.nodes_text(result))
    print(audit.audit_text(result.audit))
    if result.report:
        print(f"wrote {result.report}")


def label_and_print(config):
    """Label (on this machine, or on Ray), then print what was found and written."""
    result = (label.label_on_ray if config.engine == "ray" else label.label)(config)
    if isinstance(result, results.LabelResult):  # not a Ray run stopped early
        print_result(result)
    return result


def main(argv=None):
    """`python predict.py`: parse, then label (plainly or on Ray)."""
    config = parse_args(argv)
    # The command, as the audit's summary and page record it.
    config = dataclasses.replace(config, command=" ".join(
        shlex.quote(a) for a in ["predict.py", *(sys.argv[1:] if argv is None else argv)]))
    quiet.hide_tensorflow_start_up()  # TensorFlow is imported only where needed, and quietly
    if config.verbose == 2:
        quiet.show_tensorflow_start_up()
    return cli.exit_code(label_and_print, config)


if __name__ == "__main__":
    sys.exit(main())
