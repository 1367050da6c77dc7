"""Train the MobileNetV2 male/female face classifier.

    python train_model.py --data_path DIR [--weights PATH] [--epochs 25] ...

DIR holds female/ and male/ (or train/ and val/ or dev/ sub-folders that each hold them).
Writes the model (HDF5), its JSON sidecar with the tuned decision threshold, training curves
and the model architecture. Every default below is the reference recipe; each is a flag.

This module is the command line only: it parses the flags into a `TrainConfig`, checks them
before any image is read, hands the config to facegender.training.run (which imports
TensorFlow, so --help answers without it) and prints the result it returns
(facegender.training.result).
"""

import argparse
import os
import sys

from facegender.cli import options
from facegender.core import quiet
from facegender.core.common import UsageError
from facegender.core.outputs import make_writable_dir
from facegender.model.sidecar import sidecar_path
from facegender.runtime.options import defaults_of
from facegender.training.config import MODEL_EXTENSIONS, MONITOR_MODES, RECIPES, TrainConfig
from facegender.training.result import training_report

DEFAULTS = defaults_of(TrainConfig)  # each flag's default, stated once: in TrainConfig

GROUPS = ("inputs and outputs", "model", "training details", "engine")


def build_parser():
    """train_model.py's flags, in their groups."""
    p, groups = options.parser(__doc__.split("\n\n")[0], GROUPS)
    add_input_output_arguments(groups["inputs and outputs"])
    add_model_arguments(groups["model"])
    add_training_arguments(groups["training details"])
    add_engine_arguments(groups["engine"])
    return p


def parse_args(argv=None):
    """The command line as a checked, frozen TrainConfig (exit code 2 and one line on a bad
    flag)."""
    p = build_parser()
    recipe = p.parse_known_args(argv)[0].recipe
    p.set_defaults(**RECIPES[recipe])
    try:
        config = TrainConfig(**vars(p.parse_args(argv)))
    except UsageError as err:  # a range TrainConfig checks
        p.error(str(err))
    check_outputs(p, config)
    return config


def add_input_output_arguments(g):
    g.add_argument("--data_path", nargs="+", required=True,
                   help="data folder(s): female/ and male/, or train/ (+ val/ or dev/) holding "
                        "them; several folders are pooled")
    g.add_argument("--val_path", nargs="+", default=DEFAULTS["val_path"],
                   help="validation folder(s) with female/ and male/ (default: DIR/val or DIR/dev, "
                        "else a stratified split)")
    g.add_argument("--val_limit", type=int, default=DEFAULTS["val_limit"],
                   help="validate on at most this many images of each validation folder (a "
                        "stratified random subset, seeded): big dev sets are slow every epoch")
    g.add_argument("--val_split", type=float, default=DEFAULTS["val_split"],
                   help="fraction held out for validation when there is no validation folder")
    g.add_argument("--source_weights", type=float, nargs="+", default=DEFAULTS["source_weights"],
                   help="one per --data_path: the share of training images drawn from each "
                        "(default: in proportion to their sizes), so a large source does not "
                        "drown a small one")
    g.add_argument("--balance_by", nargs="+", default=DEFAULTS["balance_by"], metavar="COLUMN",
                   help="attribute columns of the data folders' attributes.csv (age is binned "
                        "by decade, 60+ as one band): in a folder that has them, every (class, "
                        "value) group is drawn equally often, and each value is a validation "
                        "group of its own, so the worst one picks the epoch and the threshold")
    g.add_argument("--output", default=DEFAULTS["output"], help="model file to write (.h5)")
    g.add_argument("--model_version", default=DEFAULTS["model_version"], metavar="NAME",
                   help="a name for this model (e.g. '0.6 (stage 15)'), written into its "
                        "sidecar as \"version\", where the model card and users read it")
    g.add_argument("--overwrite", action="store_true",
                   help="let the run replace an existing --output model and its sidecar "
                        "(refused by default, before any image is read)")
    g.add_argument("--checkpoint_dir", default=DEFAULTS["checkpoint_dir"],
                   help="where per-epoch checkpoints go (default: <output>_checkpoints/)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last finished epoch")
    g.add_argument("--allow_output_in_data", action="store_true",
                   help="let --output and the checkpoints go inside a --data_path or "
                        "--val_path folder (refused by default: they are not your images)")


def add_model_arguments(g):
    g.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULTS["recipe"],
                   help="flag preset: " + "; ".join(
                       f"{k}: {' '.join(f'--{f} {v}' for f, v in d.items()) or 'the defaults'}"
                       for k, d in RECIPES.items()))
    g.add_argument("--weights", default=DEFAULTS["weights"],
                   help="backbone initialisation: imagenet, none, or a path to a weights file")
    g.add_argument("--init_model", default=DEFAULTS["init_model"],
                   help="start from the weights of a model saved by train_model.py (head "
                        "included, no warm-up) instead of --weights: to fine-tune it further, "
                        "for example at a larger --image_size")
    g.add_argument("--trainable_layers", type=int, default=DEFAULTS["trainable_layers"],
                   help="train only this many top backbone layers (default: all; 0 freezes it)")
    g.add_argument("--image_size", type=int, default=DEFAULTS["image_size"],
                   help="square input size in pixels")
    g.add_argument("--face_geometry", default=DEFAULTS["face_geometry"],
                   help="the face crop every image is cut to before it is resized, in training "
                        "and (through the sidecar) in use: aligned[:SCALE] (five landmarks on "
                        "a fixed template), box[:SCALE] (the finder's square box), or none (as "
                        "given); landmarks are cached under --cache_dir")
    g.add_argument("--dense_units", type=int, default=DEFAULTS["dense_units"],
                   help="width of the head's hidden layer")
    g.add_argument("--dropout", type=float, default=DEFAULTS["dropout"],
                   help="dropout rate before the head's output")


def add_training_arguments(g):
    g.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help="end-to-end epochs; 0 with --init_model trains nothing and only tunes "
                        "the saved model's threshold on the validation data")
    g.add_argument("--epoch_images", type=int, default=DEFAULTS["epoch_images"],
                   help="training images per epoch (default: one pass over the oversampled "
                        "training set); smaller epochs check, validate and save more often")
    g.add_argument("--learning_rate", type=float, default=DEFAULTS["learning_rate"],
                   help="Adam learning rate")
    g.add_argument("--focal_alpha", type=float, default=DEFAULTS["focal_alpha"],
                   help="focal loss weight of the male class (the female class gets 1 - it)")
    g.add_argument("--focal_gamma", type=float, default=DEFAULTS["focal_gamma"],
                   help="focal loss focusing: how much less the examples already right count")
    g.add_argument("--class_weights", type=float, nargs=2, default=DEFAULTS["class_weights"],
                   metavar=("FEMALE", "MALE"), help="loss weight of each class")
    g.add_argument("--oversample", type=float, default=DEFAULTS["oversample"],
                   help="repeat the minority class up to this fraction of the majority (0: off)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=DEFAULTS["augment"],
                   help="random rotation, zoom, shear, shifts, brightness and horizontal flip")
    g.add_argument("--zoom", type=float, nargs=2, default=DEFAULTS["zoom"], metavar=("LOW", "HIGH"),
                   help="zoom range of the augmentation: below 0 zooms in (a tighter crop), "
                        "above 0 out")
    g.add_argument("--as_given", type=float, default=DEFAULTS["as_given"],
                   help="with --face_geometry: the share of training images with a face that "
                        "are used whole, as given, anyway, so the model also learns to read the "
                        "photos in which no face will be found (glare over it, a profile), "
                        "which are scored as given")
    g.add_argument("--grayscale", type=float, default=DEFAULTS["grayscale"],
                   help="share of training images turned grey, as old photos are")
    g.add_argument("--degrade", type=float, default=DEFAULTS["degrade"],
                   help="share of training images given one of the seven weather and camera "
                        "degradations of facecom_distorted at random (blur, fog, low light, "
                        "noise, rain, low resolution, sun glare; 0: off)")
    g.add_argument("--monitor", choices=sorted(MONITOR_MODES), default=DEFAULTS["monitor"],
                   help="the validation score that picks the kept epoch and drives EarlyStopping "
                        "and ReduceLROnPlateau (val_macro_f1: macro-F1 at its best threshold, "
                        "with several validation sources the worst one's; val_worst_recall: the "
                        "lowest recall of any (source, class) with 20 images or more, at its best "
                        "threshold); the decision threshold is chosen for the same score")
    g.add_argument("--patience", type=int, default=DEFAULTS["patience"],
                   help="EarlyStopping patience in epochs without a better --monitor")
    g.add_argument("--lr_patience", type=int, default=DEFAULTS["lr_patience"],
                   help="ReduceLROnPlateau patience in epochs without a better --monitor")
    g.add_argument("--lr_factor", type=float, default=DEFAULTS["lr_factor"],
                   help="ReduceLROnPlateau factor")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed for the split, sampling and weights")
    g.add_argument("--warmup_epochs", type=int, default=DEFAULTS["warmup_epochs"],
                   help="first train the head alone for up to this many epochs on cached "
                        "backbone features (seconds on a CPU; 0: off)")
    g.add_argument("--warmup_learning_rate", type=float, default=DEFAULTS["warmup_learning_rate"],
                   help="Adam learning rate for --warmup_epochs")
    g.add_argument("--feature_epochs", type=int, default=DEFAULTS["feature_epochs"],
                   help="then fine-tune the backbone's top blocks and the head for up to this "
                        "many epochs on cached feature maps of the blocks below them (each "
                        "image as is and mirrored, no other augmentation; 0: off)")
    g.add_argument("--feature_learning_rate", type=float, default=DEFAULTS["feature_learning_rate"],
                   help="Adam learning rate for --feature_epochs")


def add_engine_arguments(g):
    g.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"],
                   help="images per training step on each replica")
    options.add_cache_argument(g)  # cached backbone features, keyed by images and weights
    g.add_argument("--strategy", choices=["default", "mirrored"], default=DEFAULTS["strategy"],
                   help="mirrored: data-parallel over every visible GPU (or every logical CPU "
                        "device when there is no GPU), the batch scaled by the replica count")
    g.add_argument("--mixed_precision", action="store_true",
                   help="float16 compute with a float32 output layer (for GPUs; slower on CPUs)")
    g.add_argument("--xla", action="store_true", help="compile training steps with XLA")
    g.add_argument("--verbose", type=int, default=DEFAULTS["verbose"], choices=[0, 1, 2],
                   help="Keras progress output")


def check_outputs(p, config):
    """What the run will write is checked before any image is read, so a bad path fails in
    the first second, not after the training, and names the user's path: --output is a Keras
    model file, no written file is one of the run's inputs (--init_model, --weights or their
    sidecars), nor an existing model or sidecar unless --overwrite (the default --output is
    the shipped model's name), the output and checkpoint folders can be written, and neither
    lies inside a data folder (the curves would be read as a face next time) unless
    --allow_output_in_data."""
    out = config.output
    if not out.lower().endswith(MODEL_EXTENSIONS):
        p.error(f"--output {out}: must end in .h5 or .keras (the file type Keras saves a model "
                "as is taken from its name)")
    if os.path.isdir(out):
        p.error(f"--output {out}: is a folder; name a .h5 file")
    inputs = [path for path in (config.init_model, config.weights)
              if path and path not in ("imagenet", "none")]
    inputs += [sidecar_path(path) for path in inputs]
    for written in config.written_files():
        for given in inputs:
            if os.path.realpath(written) == os.path.realpath(given):
                p.error(f"--output {out}: would write {written} over {given}, an input of "
                        "this run; name another output file")
    existing = [path for path in (out, sidecar_path(out)) if os.path.exists(path)]
    if existing and not config.overwrite:
        p.error(f"--output {out}: {existing[0]} exists (a model or its sidecar) and would be "
                "replaced at the end of the run; name another --output file, or pass "
                "--overwrite to replace it")
    checkpoint_dir = config.checkpoint_folder()
    if not config.allow_output_in_data:
        check_outside_data(p, config, (("--output", out), ("--checkpoint_dir", checkpoint_dir)))
    for flag, folder in (("--output", os.path.dirname(os.path.abspath(out))),
                         ("--checkpoint_dir", checkpoint_dir)):
        try:
            make_writable_dir(folder)
        except OSError as err:
            p.error(f"{flag} {folder}: cannot be written ({err.strerror})")


def check_outside_data(p, config, places):
    """No (flag, path) of `places` inside a --data_path or --val_path folder."""
    for folder in config.data_path + (config.val_path or []):
        root = os.path.realpath(folder)
        for flag, path in places:
            real = os.path.realpath(path)
            if real == root or real.startswith(root + os.sep):
                p.error(f"{flag} {path}: is inside the data folder {folder}; write it "
                        "elsewhere, or pass --allow_output_in_data")


def train_and_report(config):
    """Train (imported only now: it needs TensorFlow), then print the validation report and
    the files written (training.result)."""
    from facegender.training import run
    result = run.train(config)
    print()  # set apart from Keras' progress lines
    print(training_report(result))


def main(argv=None):
    """`python train_model.py`: parse, then train and report."""
    config = parse_args(argv)
    quiet.hide_tensorflow_start_up()  # TensorFlow's start-up lines stay off the terminal
    return options.exit_code(train_and_report, config)


if __name__ == "__main__":
    sys.exit(main())
