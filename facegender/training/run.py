"""Train the MobileNetV2 male/female face classifier.

    python train_model.py --data_path DIR [--weights PATH] [--epochs 25] ...

DIR holds female/ and male/ (or train/ and val/ or dev/ sub-folders that each hold them).
Writes the model (HDF5), its JSON sidecar with the tuned decision threshold, training curves
and the model architecture. Every default below is the reference recipe; each is a flag.
"""

import argparse
import functools
import glob
import os
import sys
import time

import quiet  # noqa: E402

quiet.hide_tensorflow_start_up()  # TensorFlow's start-up lines stay off the terminal

import numpy as np  # noqa: E402

import cli  # noqa: E402
import data  # noqa: E402
import faces  # noqa: E402
import inference  # noqa: E402
import metrics  # noqa: E402
import model as model_lib  # noqa: E402
import pipeline  # noqa: E402
import plots  # noqa: E402
import splits  # noqa: E402
import stages  # noqa: E402
from callbacks import (MONITOR_MODES, CheckpointFolder, EpochCheckpoint,  # noqa: E402
                       TrainingState, ValidationMetrics, check_resume, load_checkpoint,
                       resume_flags, threshold_criterion)
from common import UsageError  # noqa: E402
from data import CLASS_NAMES  # noqa: E402
from losses import BinaryFocalLoss  # noqa: E402
from outputs import atomic_path, make_writable_dir, write_text  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


# Flag presets. `reference` is the recipe this toolkit reproduces. `fast` is made for CPUs: the
# head is first trained in seconds on cached backbone features, then the top blocks for a few
# minutes on cached feature maps of the blocks below, then the whole network is fine-tuned with
# augmentation at a higher learning rate and a smaller input (160 px costs half the compute of
# 224). Flags given on the command line override a preset.
RECIPES = {
    "reference": {},
    "fast": {"warmup_epochs": 30, "feature_epochs": 3, "image_size": 160,
             "learning_rate": 3e-5, "epochs": 6, "patience": 3, "lr_patience": 1,
             "lr_factor": 0.3},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="reference",
                   help="flag preset: " + "; ".join(
                       f"{k}: {' '.join(f'--{f} {v}' for f, v in d.items()) or 'the defaults'}"
                       for k, d in RECIPES.items()))
    p.add_argument("--data_path", nargs="+", required=True,
                   help="data folder(s): female/ and male/, or train/ (+ val/ or dev/) holding "
                        "them; several folders are pooled")
    p.add_argument("--val_path", nargs="+", default=None,
                   help="validation folder(s) with female/ and male/ (default: DIR/val or DIR/dev, "
                        "else a stratified split)")
    p.add_argument("--val_limit", type=int, default=None,
                   help="validate on at most this many images of each validation folder (a "
                        "stratified random subset, seeded): big dev sets are slow every epoch")
    p.add_argument("--source_weights", type=float, nargs="+", default=None,
                   help="one per --data_path: the share of training images drawn from each "
                        "(default: in proportion to their sizes), so a large source does not "
                        "drown a small one")
    p.add_argument("--balance_by", nargs="+", default=[], metavar="COLUMN",
                   help="attribute columns of the data folders' attributes.csv (age is binned "
                        "by decade, 60+ as one band): in a folder that has them, every (class, "
                        "value) group is drawn equally often, and each value is a validation "
                        "group of its own, so the worst one picks the epoch and the threshold")
    p.add_argument("--epoch_images", type=int, default=None,
                   help="training images per epoch (default: one pass over the oversampled "
                        "training set); smaller epochs check, validate and save more often")
    p.add_argument("--val_split", type=float, default=0.15,
                   help="fraction held out for validation when there is no validation folder")
    p.add_argument("--output", default="model_balanced.h5", help="model file to write (.h5)")
    p.add_argument("--overwrite", action="store_true",
                   help="let the run replace an existing --output model and its sidecar "
                        "(refused by default, before any image is read)")
    p.add_argument("--weights", default="imagenet",
                   help="backbone initialisation: imagenet, none, or a path to a weights file")
    p.add_argument("--init_model", default=None,
                   help="start from the weights of a model saved by train_model.py (head "
                        "included, no warm-up) instead of --weights: to fine-tune it further, "
                        "for example at a larger --image_size")
    p.add_argument("--trainable_layers", type=int, default=None,
                   help="train only this many top backbone layers (default: all; 0 freezes it)")
    p.add_argument("--image_size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--face_geometry", default=faces.DEFAULT_GEOMETRY,
                   help="the face crop every image is cut to before it is resized, in training "
                        "and (through the sidecar) in use: aligned[:SCALE] (five landmarks on "
                        "a fixed template), box[:SCALE] (the finder's square box), or none (as "
                        "given); landmarks are cached under --cache_dir")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=25,
                   help="end-to-end epochs; 0 with --init_model trains nothing and only tunes "
                        "the saved model's threshold on the validation data")
    p.add_argument("--learning_rate", type=float, default=1e-5, help="Adam learning rate")
    p.add_argument("--focal_alpha", type=float, default=0.5)
    p.add_argument("--focal_gamma", type=float, default=1.5)
    p.add_argument("--oversample", type=float, default=1.0,
                   help="repeat the minority class up to this fraction of the majority (0: off)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random rotation, zoom, shear, shifts, brightness and horizontal flip")
    p.add_argument("--zoom", type=float, nargs=2, default=[-0.2, 0.2], metavar=("LOW", "HIGH"),
                   help="zoom range of the augmentation: below 0 zooms in (a tighter crop), "
                        "above 0 out")
    p.add_argument("--as_given", type=float, default=0.0,
                   help="with --face_geometry: the share of training images with a face that "
                        "are used whole, as given, anyway, so the model also learns to read the "
                        "photos in which no face will be found (glare over it, a profile), "
                        "which are scored as given")
    p.add_argument("--grayscale", type=float, default=0.0,
                   help="share of training images turned grey, as old photos are")
    p.add_argument("--degrade", type=float, default=0.0,
                   help="share of training images given one of the seven weather and camera "
                        "degradations of facecom_distorted at random (blur, fog, low light, "
                        "noise, rain, low resolution, sun glare; 0: off)")
    p.add_argument("--class_weights", type=float, nargs=2, default=[1.0, 0.9],
                   metavar=("FEMALE", "MALE"), help="loss weight of each class")
    p.add_argument("--dense_units", type=int, default=128, help="width of the head's hidden layer")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--monitor", choices=sorted(MONITOR_MODES), default="val_loss",
                   help="the validation score that picks the kept epoch and drives EarlyStopping "
                        "and ReduceLROnPlateau (val_macro_f1: macro-F1 at its best threshold, "
                        "with several validation sources the worst one's; val_worst_recall: the "
                        "lowest recall of any (source, class) with 20 images or more, at its best "
                        "threshold); the decision threshold is chosen for the same score")
    p.add_argument("--patience", type=int, default=5,
                   help="EarlyStopping patience in epochs without a better --monitor")
    p.add_argument("--lr_patience", type=int, default=3,
                   help="ReduceLROnPlateau patience in epochs without a better --monitor")
    p.add_argument("--lr_factor", type=float, default=0.5, help="ReduceLROnPlateau factor")
    p.add_argument("--seed", type=int, default=42, help="seed for the split, sampling and weights")
    p.add_argument("--warmup_epochs", type=int, default=0,
                   help="first train the head alone for up to this many epochs on cached "
                        "backbone features (seconds on a CPU; 0: off)")
    p.add_argument("--warmup_learning_rate", type=float, default=1e-3)
    p.add_argument("--feature_epochs", type=int, default=0,
                   help="then fine-tune the backbone's top blocks and the head for up to this "
                        f"many epochs on cached feature maps at {model_lib.FEATURE_MAP_LAYER} "
                        "(each image as is and mirrored, no other augmentation; 0: off)")
    p.add_argument("--feature_learning_rate", type=float, default=1e-4,
                   help="Adam learning rate for --feature_epochs")
    cli.add_cache_argument(p)  # cached backbone features, keyed by images and weights
    p.add_argument("--strategy", choices=["default", "mirrored"], default="default",
                   help="mirrored: data-parallel over every visible GPU (or every logical CPU "
                        "device when there is no GPU), the batch scaled by the replica count")
    p.add_argument("--mixed_precision", action="store_true",
                   help="float16 compute with a float32 output layer (for GPUs; slower on CPUs)")
    p.add_argument("--xla", action="store_true", help="compile training steps with XLA")
    p.add_argument("--checkpoint_dir", default=None,
                   help="where per-epoch checkpoints go (default: <output>_checkpoints/)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last finished epoch")
    p.add_argument("--allow_output_in_data", action="store_true",
                   help="let --output and the checkpoints go inside a --data_path or "
                        "--val_path folder (refused by default: they are not your images)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="Keras progress output")
    recipe = p.parse_known_args(argv)[0].recipe
    p.set_defaults(**RECIPES[recipe])
    args = p.parse_args(argv)
    if not 0 < args.val_split < 1:
        p.error("--val_split must be between 0 and 1")
    if args.epochs < 0 or args.batch_size < 1:
        p.error("--epochs must be at least 0 and --batch_size at least 1")
    if args.epochs == 0 and not (args.init_model or args.resume):
        p.error("--epochs 0 trains nothing: it only tunes the threshold of an --init_model "
                "(or a --resume'd run) on the validation data")
    if args.epochs == 0:  # nor do a recipe's cached-feature stages
        args.warmup_epochs = args.feature_epochs = 0
    if args.image_size < 32:
        p.error("--image_size must be at least 32")
    check_ranges(p, args)
    if args.source_weights and len(args.source_weights) != len(args.data_path):
        p.error("--source_weights takes one weight per --data_path folder")
    if args.source_weights and (min(args.source_weights) < 0 or sum(args.source_weights) <= 0):
        p.error("--source_weights must be non-negative and not all 0")
    if not 0 <= args.degrade <= 1 or not 0 <= args.grayscale <= 1 or not 0 <= args.as_given <= 1:
        p.error("--degrade, --grayscale and --as_given are shares of the images, between 0 "
                "and 1")
    if not -1 < args.zoom[0] <= args.zoom[1]:
        p.error("--zoom takes LOW <= HIGH, LOW above -1")
    try:
        args.geometry = faces.parse_geometry(args.face_geometry)
    except UsageError as err:
        p.error(f"--face_geometry: {err}")
    check_outputs(p, args)
    return args


MODEL_EXTENSIONS = (".h5", ".keras")  # what Keras saves a whole model as, by the name


def checkpoint_folder(args):
    return args.checkpoint_dir or os.path.splitext(args.output)[0] + "_checkpoints"


def written_files(args):
    """Every file the end of a run writes: the model, its sidecar, the curves, the
    architecture (as a picture or as text)."""
    out_dir = os.path.dirname(os.path.abspath(args.output))
    return [args.output, model_lib.sidecar_path(args.output)] + [
        os.path.join(out_dir, name) for name in ("training_curves.png",
                                                 "model_architecture.png",
                                                 "model_architecture.txt")]


def check_outputs(p, args):
    """What the run will write is checked before any image is read, so a bad path fails in
    the first second, not after the training, and names the user's path: --output is a Keras
    model file, no written file is one of the run's inputs (--init_model, --weights or their
    sidecars), nor an existing model or sidecar unless --overwrite (the default --output is
    the shipped model's name), the output and checkpoint folders can be written, and neither
    lies inside a data folder (the curves would be read as a face next time) unless
    --allow_output_in_data."""
    out = args.output
    if not out.lower().endswith(MODEL_EXTENSIONS):
        p.error(f"--output {out}: must end in .h5 or .keras (the file type Keras saves a model "
                "as is taken from its name)")
    if os.path.isdir(out):
        p.error(f"--output {out}: is a folder; name a .h5 file")
    inputs = [path for path in (args.init_model, args.weights)
              if path and path not in ("imagenet", "none")]
    inputs += [model_lib.sidecar_path(path) for path in inputs]
    for written in written_files(args):
        for given in inputs:
            if os.path.realpath(written) == os.path.realpath(given):
                p.error(f"--output {out}: would write {written} over {given}, an input of "
                        "this run; name another output file")
    existing = [path for path in (out, model_lib.sidecar_path(out)) if os.path.exists(path)]
    if existing and not args.overwrite:
        p.error(f"--output {out}: {existing[0]} exists (a model or its sidecar) and would be "
                "replaced at the end of the run; name another --output file, or pass "
                "--overwrite to replace it")
    checkpoint_dir = checkpoint_folder(args)
    places = (("--output", out), ("--checkpoint_dir", checkpoint_dir))
    if not args.allow_output_in_data:
        for folder in args.data_path + (args.val_path or []):
            root = os.path.realpath(folder)
            for flag, path in places:
                real = os.path.realpath(path)
                if real == root or real.startswith(root + os.sep):
                    p.error(f"{flag} {path}: is inside the data folder {folder}; write it "
                            "elsewhere, or pass --allow_output_in_data")
    for flag, folder in (("--output", os.path.dirname(os.path.abspath(out))),
                         ("--checkpoint_dir", checkpoint_dir)):
        try:
            make_writable_dir(folder)
        except OSError as err:
            p.error(f"{flag} {folder}: cannot be written ({err.strerror})")


# Each flag's allowed values: (test, what is allowed), checked before any image is read.
RANGES = {
    "dropout": (lambda v: 0 <= v < 1, "from 0 up to, not including, 1"),
    "lr_factor": (lambda v: 0 < v < 1, "between 0 and 1, both excluded"),
    "dense_units": (lambda v: v >= 1, "at least 1"),
    "learning_rate": (lambda v: v > 0, "above 0"),
    "warmup_learning_rate": (lambda v: v > 0, "above 0"),
    "feature_learning_rate": (lambda v: v > 0, "above 0"),
    "focal_alpha": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "focal_gamma": (lambda v: v >= 0, "0 or more"),
    "oversample": (lambda v: v >= 0, "0 or more"),
    "patience": (lambda v: v >= 0, "0 or more"),
    "lr_patience": (lambda v: v >= 0, "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "feature_epochs": (lambda v: v >= 0, "0 or more"),
    "val_limit": (lambda v: v is None or v >= 2, "at least 2 (one image of each class)"),
    "epoch_images": (lambda v: v is None or v >= 1, "at least 1"),
    "trainable_layers": (lambda v: v is None or v >= 0, "0 or more"),
    "class_weights": (lambda v: min(v) >= 0 and max(v) > 0, "0 or more each, not both 0"),
}


def check_ranges(p, args):
    """One line and exit code 2 for the first flag out of its range (RANGES): a value Keras
    would reject with a traceback, or, worse, accept and train a model with."""
    for flag, (ok, allowed) in RANGES.items():
        value = getattr(args, flag)
        if not ok(value):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            p.error(f"--{flag} {shown}: must be {allowed}")


# ---------------------------------------------------------------------------
# Data

def validation_scores(model, val, batch_size, reader, verbose=0):
    """(labels, P(male), sources) for the validation images `val` that decoded; the ones that
    did not are added to `reader.skipped` ({path: reason}). Decoding them again each epoch
    costs about a second per thousand images, far less than the model's pass over them."""
    scores, _ = inference.score_paths(inference.KerasRunner(model), val.paths,
                                      model_lib.input_size(model), batch_size, verbose,
                                      reader=reader)
    keep = ~np.isnan(scores)
    return np.asarray(val.labels)[keep], scores[keep], np.asarray(val.sources)[keep]


# ---------------------------------------------------------------------------
# Outputs

def portable_config(args):
    """The flags, with every path cut to what names it on any machine: data folders by their
    short names ("utkface/dev"), files by their base names."""
    config = dict(vars(args))
    for flag in ("data_path", "val_path"):
        if config[flag]:
            config[flag] = data.source_names(config[flag])
    for flag in ("output", "init_model", "weights", "checkpoint_dir"):
        if config[flag] and config[flag] not in ("imagenet", "none"):
            config[flag] = os.path.basename(os.path.normpath(config[flag]))
    config.pop("cache_dir")  # a local folder; says nothing about the model
    config.pop("geometry")  # the sidecar's face_geometry
    return config


def save_architecture(model, stem_dir):
    """model_architecture.png when pydot and graphviz are installed, else a text summary."""
    png = os.path.join(stem_dir, "model_architecture.png")
    try:
        with atomic_path(png) as tmp:
            keras.utils.plot_model(model, to_file=tmp, show_shapes=True, show_layer_names=True)
            if not os.path.getsize(tmp):
                raise OSError("graphviz wrote nothing")
        return png
    except (ImportError, OSError, FileNotFoundError):
        lines = []
        model.summary(print_fn=lines.append, expand_nested=True)
        txt = os.path.join(stem_dir, "model_architecture.txt")
        write_text(txt, "\n".join(lines) + "\n")
        return txt


# ---------------------------------------------------------------------------

def distribution_strategy(name):
    """The tf.distribute strategy for `--strategy`, and how many replicas it runs."""
    if name == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.get_strategy()
    return strategy, strategy.num_replicas_in_sync


def train(args):
    """Data, model (built, or resumed from a checkpoint), the cached-feature stages, the
    end-to-end fine-tune, the threshold, the saved model."""
    checkpoint_dir = checkpoint_folder(args)
    # Held until the run ends: a second run on the same checkpoints is refused meanwhile.
    holder = CheckpointFolder(checkpoint_dir)
    try:
        leftovers = holder.removed + remove_partial_outputs(args)
        if leftovers:
            print(f"removed {len(leftovers)} file(s) left by an interrupted save: "
                  + ", ".join(map(os.path.basename, leftovers)))
        return run_training(args, checkpoint_dir)
    finally:
        holder.release()


def run_training(args, checkpoint_dir):
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy, replicas = distribution_strategy(args.strategy)
    # Each replica gets --batch_size images, so the global batch grows with the replica count.
    batch_size = args.batch_size * replicas
    split = splits.split_data(args)
    describe(split, args, replicas, batch_size)
    # Faces are found once, before any training: every stage then reads cached landmarks.
    found = data.main_faces(split.train.paths + split.val.paths, args.geometry,
                            args.cache_dir, args.verbose)
    with strategy.scope():
        model, state = build_or_resume(args, split, checkpoint_dir, found)
    reader = data.ImageReader(model_lib.input_size(model), args.geometry, found)
    scores = functools.partial(validation_scores, val=split.val, batch_size=batch_size,
                               reader=reader)
    checkpoint = fine_tune(model, state, split.train, reader, batch_size, scores,
                           split.val_names, checkpoint_dir, args)
    finish(model, checkpoint, scores(model, verbose=args.verbose), split, reader, args, start)
    return found


def remove_partial_outputs(args):
    """Temporary files that a killed save of this run's outputs left beside them
    (outputs.atomic_path names them .partial-*.NAME)."""
    leftovers = []
    for path in written_files(args):
        folder, name = os.path.split(os.path.abspath(path))
        leftovers += glob.glob(os.path.join(glob.escape(folder), f".partial-*.{glob.escape(name)}"))
    for path in leftovers:
        os.remove(path)
    return leftovers


def describe(split, args, replicas, batch_size):
    if replicas > 1:
        print(f"{args.strategy} strategy: {replicas} replicas, global batch {batch_size}")
    counts = np.bincount(split.train.labels, minlength=2)
    val_labels = split.val.labels
    print(f"training images: {counts[0]} female, {counts[1]} male; validation: "
          f"{np.sum(val_labels == 0)} female, {np.sum(val_labels == 1)} male ({split.how})")
    if args.balance_by and any(split.train.strata):
        groups, shares = splits.draw_groups(args, split.train)
        names = data.source_names(args.data_path)
        print(f"drawn by {' '.join(args.balance_by)}: " + ", ".join(
            f"{splits.group_name(names, key)} {np.sum(groups == g)} images ({shares[g]:.1%})"
            for g, key in enumerate(splits.strata_groups(split.train)[1])))
    print(f"validation groups: {', '.join(split.val_names)}")
    if len(args.data_path) > 1:
        sizes = np.bincount(split.train.sources, minlength=len(args.data_path))
        shares = splits.source_weights(args, split.train.sources)
        print("training sources: " + ", ".join(
            f"{path} {n} images" + ("" if shares is None else
                                    f" (drawn {shares[k] / sum(shares):.0%})")
            for k, (path, n) in enumerate(zip(args.data_path, sizes))))


def build_or_resume(args, split, checkpoint_dir, found):
    """The model to fine-tune end to end, and the `TrainingState` of the run so far: resumed
    from `checkpoint_dir`, or built (from --init_model or --weights) and taken through the
    cached-feature stages the flags ask for, on the images cut by `found` faces."""
    model, state = load_checkpoint(checkpoint_dir) if args.resume else (None, None)
    if args.resume and model is None:
        print(f"no checkpoint in {checkpoint_dir}; starting from scratch")
    if model is not None:
        check_resume(state, args, model_lib.input_size(model), checkpoint_dir)
        state.flags = state.flags or resume_flags(args)
        print(f"resuming from {checkpoint_dir} after epoch {state.epochs_done}")
        if state.monitor != args.monitor:
            print(f"note: the kept best epoch was picked by {state.monitor}; from now on "
                  f"--monitor {args.monitor} picks it")
            # Counters and a baseline kept for another score would compare unlike numbers.
            state.counters, state.baseline = {}, None
        state.monitor = args.monitor
        return model, state

    model = model_lib.build_model(args.image_size, args.weights, args.trainable_layers,
                                  args.dense_units, args.dropout, args.init_model)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=BinaryFocalLoss(args.focal_alpha, args.focal_gamma),
                  metrics=["accuracy"], jit_compile=args.xla)
    state = TrainingState(monitor=args.monitor, flags=resume_flags(args))
    reader = data.ImageReader(args.image_size, args.geometry, found)
    if args.init_model:
        print(f"starting from the weights of {args.init_model}; no head warm-up")
    elif args.warmup_epochs > 0:
        stages.warm_up_head(model, split.train, split.val, args, reader)
    if args.feature_epochs > 0:
        state.baseline, stage = stages.fine_tune_top_blocks(model, split.train, split.val, args,
                                                            checkpoint_dir, reader)
        state.feature_stage = {"history": stage}
    return model, state


def fine_tune(model, state, train_set, reader, batch_size, scores, val_names, checkpoint_dir,
              args):
    """Fine-tune the whole network with augmentation, checkpointing every epoch; returns the
    checkpoint, whose history and best epoch span every run that led here."""
    groups, shares = splits.draw_groups(args, train_set)
    if args.as_given > 0 and args.geometry is not None:
        reader = reader.sometimes_as_given(args.as_given, args.seed)
    train_ds = pipeline.make_train_dataset(
        *train_set[:2], reader, batch_size, args.oversample, args.augment, args.seed,
        class_weights=dict(enumerate(args.class_weights)), sources=groups,
        source_weights=shares, degrade=args.degrade, zoom=tuple(args.zoom),
        grayscale=args.grayscale)
    mode = MONITOR_MODES[args.monitor]
    plateau = {
        # With a top-block stage, `patience` epochs that do not beat it also stop the run.
        "early_stopping": keras.callbacks.EarlyStopping(args.monitor, mode=mode,
                                                        patience=args.patience,
                                                        baseline=state.baseline),
        "reduce_lr": keras.callbacks.ReduceLROnPlateau(args.monitor, mode=mode,
                                                       factor=args.lr_factor,
                                                       patience=args.lr_patience, min_lr=1e-7),
    }
    checkpoint = EpochCheckpoint(checkpoint_dir, state, plateau)
    if state.epochs_done < args.epochs:
        # Order matters: the validation scores join the logs first, and the checkpoint sees
        # the epoch last.
        model.fit(train_ds, epochs=args.epochs, initial_epoch=state.epochs_done,
                  steps_per_epoch=splits.epoch_steps(args, train_set.labels, shares, batch_size),
                  callbacks=[ValidationMetrics(scores, val_names), *plateau.values(),
                             checkpoint],
                  shuffle=False,  # the pipeline shuffles
                  verbose=args.verbose)
    best_file = os.path.join(checkpoint_dir, "best.weights.h5")
    if os.path.exists(best_file):
        model.load_weights(best_file)  # the best epoch by --monitor, even across a resume
    return checkpoint


def finish(model, checkpoint, validation, split, reader, args, start):
    """Tune the decision threshold on the validation images, save the model with its sidecar,
    draw the curves and print the validation report."""
    y_val, scores, val_sources = validation
    # One threshold for every validation source: the one whose worst source does best, by
    # the score that picked the epoch.
    criterion = threshold_criterion(args.monitor)
    threshold, _ = metrics.best_threshold(y_val, scores, groups=val_sources, criterion=criterion)
    report = metrics.evaluation_report(y_val, scores, threshold)
    history = checkpoint.history
    sidecar = {
        "class_names": list(CLASS_NAMES),
        "input_size": model_lib.input_size(model),
        "input": ("RGB pixels 0..255, resized to input_size x input_size" if args.geometry is None
                  else "RGB pixels 0..255 of the face cut by face_geometry (faces.py), at "
                       "input_size x input_size"),
        # The crop the model was trained on: test_script.py and predict.py feed it the same.
        "face_geometry": args.geometry and args.geometry.to_dict(),
        "output": "P(male)",
        "threshold": threshold,
        "threshold_source": (
            f"best worst (source, class) recall over the validation sources ({split.how})"
            if criterion == "worst_recall" else
            f"best macro-F1 on the validation data ({split.how})" if len(split.val_names) == 1
            else f"best worst-source macro-F1 over the validation sources ({split.how})"),
        "validation": {k: report[k] for k in ("macro_f1", "accuracy", "per_class_accuracy",
                                               "confusion_matrix")},
        # The counts predict.py corrects a collection's share of women with (quantify.py).
        # The data that tuned the threshold, so optimistic: test_script.py --store_error_rates
        # replaces them with counts on faces the model picked nothing on.
        "error_rates": {"confusion_matrix": report["confusion_matrix"], "threshold": threshold,
                        "tta": False, "images": int(len(y_val)),
                        "measured_on": "the validation data that tuned the threshold"},
        # Each validation source's scores at the threshold, so a user sees who it serves.
        "validation_sources": metrics.group_table([split.val_names[s] for s in val_sources],
                                                  y_val, scores, threshold),
        "epochs_run": len(history.get("val_loss", [])),
        # 0: no end-to-end epoch beat the top-block fine-tune on cached feature maps.
        "best_epoch": checkpoint.best_epoch(),
        "best_epoch_by": args.monitor,
        "feature_stage": checkpoint.state.feature_stage,
        # Wall time of this process, warm-up and threshold tuning included (not earlier runs
        # that this one resumed).
        "training_seconds_this_run": round(time.time() - start, 1),
        # Fine-tuning epochs of every run that led here, resumed ones included.
        "epoch_seconds_all_runs": round(sum(history.get("epoch_seconds", [])), 1),
        "unreadable_images": sorted(reader.skipped),
        # Training and validation images in which no face was found: used as given.
        "images_without_a_face": len(data.faceless(split.train.paths + split.val.paths,
                                                   reader.faces, reader.skipped)),
        "config": portable_config(args),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    model_lib.save_model(model, args.output, sidecar)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    plots.save(plots.training_curves_figure(history), os.path.join(out_dir, "training_curves.png"))
    architecture = save_architecture(model, out_dir)

    tuned_for = ("the worst (source, class) recall" if criterion == "worst_recall"
                 else "macro-F1")
    print(f"\nvalidation at threshold {threshold:.2f} (tuned for {tuned_for}):")
    print(report["report_text"])
    for name, (ok, n) in report["per_class_accuracy"].items():
        print(f"  {name:>6} accuracy: {ok}/{n}")
    if len(split.val_names) > 1:
        for row in sidecar["validation_sources"]:
            print(f"  {row['group']}: macro-F1 {row['macro_f1']:.4f}")
    print(f"wrote {args.output}, {model_lib.sidecar_path(args.output)}, "
          f"{os.path.join(out_dir, 'training_curves.png')}, {architecture}")
    if reader.skipped:
        print(f"skipped {len(reader.skipped)} unreadable image(s); listed in the sidecar")
    if args.geometry is not None:
        print(f"faces cut to {args.geometry}; no face found in "
              f"{sidecar['images_without_a_face']} image(s), used as given")


def main(argv=None):
    args = parse_args(argv)
    return cli.exit_code(train, args)


if __name__ == "__main__":
    sys.exit(main())
