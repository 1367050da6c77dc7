"""Evaluate a saved face-gender model on a labelled folder of images.

    python test_script.py --data_path DIR [--model_path model_balanced.h5] [--output_dir OUT]

DIR holds female/ and male/. Reports at the model's own threshold (from its JSON sidecar) and at
the threshold that gives the best macro-F1 on this data, saves the confusion matrix, ROC,
precision-recall and reliability curves, metrics and per-image predictions, and copies every
misclassified image into misclassified/ with a Grad-CAM contact sheet of the worst mistakes.
A data folder with an attributes.csv (age, origin, ...) also gets every class's recall and the
macro-F1 per value of each attribute, with 95% intervals: the model card's factors.

This module is the command line only: it parses the flags into an `EvalConfig`, hands it to
facegender.evaluation.evaluate (imported after parsing, so --help answers at once) and prints
the result as facegender.evaluation.summary writes it.
"""

import sys

from facegender.cli import options
from facegender.core import quiet
from facegender.evaluation.config import EvalConfig
from facegender.runtime.options import defaults_of

GROUPS = ("inputs and outputs", "model", "engine")
DEFAULTS = defaults_of(EvalConfig)  # each flag's default, stated once: in EvalConfig


def build_parser():
    """test_script.py's flags, in their groups."""
    p, groups = options.parser(__doc__.split("\n\n")[0], GROUPS)
    g = groups["inputs and outputs"]
    g.add_argument("--data_path", nargs="+", required=True,
                   help="folder(s) holding female/ and male/, or a folder of such folders (their "
                        "dev/ or val/ split where they have one); several are reported per "
                        "source as well as pooled")
    g.add_argument("--output_dir", default=DEFAULTS["output_dir"],
                   help="where every output is written")
    g.add_argument("--group_by", choices=["suffix", "folder"], default=DEFAULTS["group_by"],
                   help="also report per group: 'suffix' is the file-name part after the last "
                        "underscore (e.g. _blurred), 'folder' the sub-folder inside the class")
    g.add_argument("--no_copy", action="store_true", help="do not copy misclassified images")
    g.add_argument("--report", metavar="FILE.html", default=DEFAULTS["report"],
                   help="also write one self-contained HTML page: the numbers, the tables by "
                        "source and factor, the figures and a gallery of the mistakes and the "
                        "faces nearest the threshold, as the model saw them")
    g.add_argument("--store_error_rates", action="store_true",
                   help="also write this data's confusion counts at the model's threshold into "
                        "the model's sidecar (error_rates), which predict.py corrects a "
                        "collection's share of women with; the data should be faces the model "
                        "picked nothing on")
    options.add_model_arguments(groups["model"], groups["engine"])
    return p


def parse_args(argv=None):
    """The command line as a checked, frozen EvalConfig."""
    p = build_parser()
    return options.config_from(p, EvalConfig, argv)  # EvalConfig checks the ranges


def main(argv=None):
    """`python test_script.py`: parse, then evaluate."""
    config = parse_args(argv)
    quiet.hide_tensorflow_start_up()  # TensorFlow is imported only where needed, and quietly
    if config.verbose == 2:
        quiet.show_tensorflow_start_up()
    return options.exit_code(evaluate_and_print, config)


def evaluate_and_print(config):
    """Evaluate (its progress and notes are logged while it works), then print the reports,
    the tables and what was written."""
    from facegender.evaluation import evaluate, summary
    print(summary.summary(evaluate.evaluate(config)))


if __name__ == "__main__":
    sys.exit(main())
