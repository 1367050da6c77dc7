"""Export a saved model to TensorFlow Lite for phones and small boards.

    python export.py --model_path model_balanced.h5 [--calibration_path DIR] [--output_dir .]

Writes `<model>_float16.tflite` (weights stored as float16: half the size, the same answers) and,
with images to calibrate on, `<model>_int8.tflite` (weights and activations in 8 bits, its
quantization ranges measured on those images). Each gets a JSON sidecar with the threshold.
Both take raw RGB 0..255 float32 input, like the Keras model, and output P(male).

This module is the command line only; the work is facegender.model.export's, imported after
parsing (it needs TensorFlow).
"""

import os
import sys

from facegender.cli import options
from facegender.core import quiet
from facegender.runtime.options import SHIPPED_MODEL

GROUPS = ("inputs and outputs", "calibration")


def build_parser():
    """export.py's flags, in their groups."""
    p, groups = options.parser(__doc__.split("\n\n")[0], GROUPS)
    g = groups["inputs and outputs"]
    g.add_argument("--model_path", default=SHIPPED_MODEL, help="the saved model to export")
    g.add_argument("--output_dir", default=None, help="where the files go (default: beside the "
                                                       "model)")
    g.add_argument("--formats", nargs="+", default=["float16", "int8"],
                   choices=["float32", "float16", "int8"],
                   help="which TFLite files to write (int8 needs --calibration_path)")
    g = groups["calibration"]
    g.add_argument("--calibration_path", default=None,
                   help="folder of face images (searched recursively) for int8 calibration")
    g.add_argument("--calibration_images", type=int, default=200,
                   help="how many images to calibrate int8 on (at least 1; 100 or more "
                        "measure the activation ranges well)")
    return p


def parse_args(argv=None):
    """The command line's choices, checked: (model_path, output_dir, formats,
    calibration_path, calibration_images), the arguments of facegender.model.export.export."""
    p = build_parser()
    chosen = p.parse_args(argv)
    if chosen.calibration_images < 1:
        p.error(f"--calibration_images {chosen.calibration_images}: must be at least 1 (int8 "
                "without calibration images would be written with guessed ranges)")
    return (chosen.model_path, chosen.output_dir, chosen.formats, chosen.calibration_path,
            chosen.calibration_images)


def written_lines(written):
    """One line per file that export wrote ({kind: path}), with its size."""
    return "\n".join(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)"
                     for path in written.values())


def export_and_show(*choices):
    from facegender.model import export
    print(written_lines(export.export(*choices)))


def main(argv=None):
    """`python export.py`: parse, export, then name what was written."""
    choices = parse_args(argv)
    quiet.hide_tensorflow_start_up()  # TensorFlow's start-up lines stay off the terminal
    return options.exit_code(export_and_show, *choices)


if __name__ == "__main__":
    sys.exit(main())
