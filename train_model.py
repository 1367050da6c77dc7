"""Train the MobileNetV2 male/female face classifier.

    python train_model.py --data_path DIR [--weights PATH] [--epochs 25] ...

DIR holds female/ and male/ (or train/ and val/ or dev/ sub-folders that each hold them).
Writes the model (HDF5), its JSON sidecar with the tuned decision threshold, training curves
and the model architecture. Every default below is the reference recipe; each is a flag.
"""

import argparse
import functools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import data  # noqa: E402
import features  # noqa: E402
import metrics  # noqa: E402
import model as model_lib  # noqa: E402
import plots  # noqa: E402
from data import CLASS_NAMES, DataError  # noqa: E402
from losses import BinaryFocalLoss  # noqa: E402
from model import ModelError  # noqa: E402
from outputs import atomic_path, write_json, write_text  # noqa: E402

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

# What --monitor may watch, and whether lower or higher is better. Keras guesses the direction from
# the name and would guess wrong for macro-F1, so it is always passed explicitly.
MONITOR_MODES = {"val_loss": "min", "val_macro_f1": "max"}


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
    p.add_argument("--epoch_images", type=int, default=None,
                   help="training images per epoch (default: one pass over the oversampled "
                        "training set); smaller epochs check, validate and save more often")
    p.add_argument("--val_split", type=float, default=0.15,
                   help="fraction held out for validation when there is no validation folder")
    p.add_argument("--output", default="model_balanced.h5", help="model file to write (.h5)")
    p.add_argument("--weights", default="imagenet",
                   help="backbone initialisation: imagenet, none, or a path to a weights file")
    p.add_argument("--init_model", default=None,
                   help="start from the weights of a model saved by train_model.py (head "
                        "included, no warm-up) instead of --weights: to fine-tune it further, "
                        "for example at a larger --image_size")
    p.add_argument("--trainable_layers", type=int, default=None,
                   help="train only this many top backbone layers (default: all; 0 freezes it)")
    p.add_argument("--image_size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--learning_rate", type=float, default=1e-5, help="Adam learning rate")
    p.add_argument("--focal_alpha", type=float, default=0.5)
    p.add_argument("--focal_gamma", type=float, default=1.5)
    p.add_argument("--oversample", type=float, default=1.0,
                   help="repeat the minority class up to this fraction of the majority (0: off)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random rotation, zoom, shear, shifts, brightness and horizontal flip")
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
                        "and ReduceLROnPlateau (val_macro_f1: macro-F1 at its best threshold)")
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
    p.add_argument("--cache_dir", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                       "facegender"),
                   help="where cached backbone features are kept, keyed by images and weights")
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
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="Keras progress output")
    recipe = p.parse_known_args(argv)[0].recipe
    p.set_defaults(**RECIPES[recipe])
    args = p.parse_args(argv)
    if not 0 < args.val_split < 1:
        p.error("--val_split must be between 0 and 1")
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch_size must be at least 1")
    if args.image_size < 32:
        p.error("--image_size must be at least 32")
    if args.source_weights and len(args.source_weights) != len(args.data_path):
        p.error("--source_weights takes one weight per --data_path folder")
    if args.source_weights and (min(args.source_weights) < 0 or sum(args.source_weights) <= 0):
        p.error("--source_weights must be non-negative and not all 0")
    if not 0 <= args.degrade <= 1:
        p.error("--degrade is a share of the images, between 0 and 1")
    return args


# ---------------------------------------------------------------------------
# Data

def collect(folders, limit=None, seed=0):
    """Pool the labelled images of several class-folder roots: (paths, labels, sources), where
    sources[i] is the index of the folder image i came from. With `limit`, each folder gives at
    most that many images, a stratified random subset."""
    from sklearn.model_selection import train_test_split

    paths, labels, sources = [], [], []
    for k, folder in enumerate(folders):
        p, y = data.list_labeled_images(folder)
        if limit and len(p) > limit:
            p, _, y, _ = train_test_split(p, y, train_size=limit, stratify=y, random_state=seed)
        paths += list(p)
        labels.append(np.asarray(y))
        sources.append(np.full(len(p), k))
    return paths, np.concatenate(labels), np.concatenate(sources)


def source_names(folders):
    """Short, distinct names for data folders: the last path parts that tell them apart."""
    parts = [os.path.abspath(f).rstrip(os.sep).split(os.sep) for f in folders]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.abspath(f) for f in folders]


def split_data(args):
    """Resolve training and validation images from the flags; returns (train, val, how, val
    folder names). train and val are (paths, labels, sources), a source being the index of the
    --data_path folder (for val: of the validation folder) an image came from."""
    from sklearn.model_selection import train_test_split

    train_roots, val_roots = [], []
    for root in args.data_path:
        if not os.path.isdir(root):
            raise DataError(f"{root}: no such folder; pass --data_path a folder holding "
                            "female/ and male/ (or train/ and val/)")
        train_roots.append(data.find_subdir(root, data.TRAIN_DIR_NAMES) or root)
        val_roots.append(data.find_subdir(root, data.VAL_DIR_NAMES))
    train = collect(train_roots)
    for k, name in enumerate(CLASS_NAMES):
        # Minutes into a run is too late to find that a class has no usable image.
        if data.first_readable(np.asarray(train[0])[train[1] == k]) is None:
            raise DataError(f"{' '.join(args.data_path)}: no readable {name} training image; "
                            "every file failed to decode")
    if args.val_path:
        return (train, collect(args.val_path, args.val_limit, args.seed),
                f"--val_path {' '.join(args.val_path)}", source_names(args.val_path))
    if all(val_roots):
        return (train, collect(val_roots, args.val_limit, args.seed),
                "validation folder(s) " + ", ".join(val_roots), source_names(val_roots))
    paths, labels, sources = train
    if min(np.bincount(labels, minlength=2)) < 2:
        raise DataError(f"{train_roots[0]}: too few images to hold some out for validation; "
                        "add images or pass --val_path")
    # At least one validation image per class, however small the data.
    held_out = max(2, int(round(args.val_split * len(paths))))
    tr_p, va_p, tr_y, va_y, tr_s, va_s = train_test_split(
        paths, labels, sources, test_size=held_out, stratify=labels, random_state=args.seed)
    return ((tr_p, tr_y, tr_s), (va_p, va_y, np.zeros_like(va_s)),
            f"stratified {args.val_split:.0%} split (seed {args.seed})", ["validation split"])


def source_weights(args, sources):
    """The per-source sampling shares to draw training images with, or None to draw from the
    pooled images as they are (one source, or no --source_weights and no --epoch_images)."""
    if args.source_weights:
        return args.source_weights
    if args.epoch_images:
        return np.bincount(sources).tolist()  # in proportion to the sources' sizes
    return None


def epoch_steps(args, labels, sources, batch_size):
    """Batches per epoch when the training set repeats (None: one pass over it)."""
    if source_weights(args, sources) is None:
        return None
    images = args.epoch_images or len(data.oversample_indices(labels, args.oversample))
    return max(1, -(-images // batch_size))


# ---------------------------------------------------------------------------
# Checkpoints: an interrupted run resumes from its last finished epoch

class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch, atomically save the full training state to `folder`.

    `last.keras` holds the model with its optimizer (learning rate included), `best.weights.h5`
    the weights of the epoch with the best `monitor` score so far, and `state.json` the epoch
    count, the history (with each epoch's wall time) and the patience counters of the `plateau`
    callbacks (EarlyStopping, ReduceLROnPlateau). So a resumed run draws complete curves, restores
    the true best weights, stops or cuts the learning rate at the epoch an uninterrupted run would,
    and can say how long the whole training took. List it after the `plateau` callbacks, so that
    it saves their counters after they have seen the epoch and restores them after fit resets them.

    `baseline` is the `monitor` score of the weights the run started from when they were trained
    on cached feature maps (--feature_epochs); their `best.weights.h5` stays the best until an
    epoch beats that score. `extra` is kept in `state.json` as it is.
    """

    COUNTERS = ("wait", "best", "cooldown_counter")

    def __init__(self, folder, history=None, monitor="val_loss", plateau=None, counters=None,
                 baseline=None, extra=None):
        super().__init__()
        self.folder = folder
        self.history = history or {}
        self.monitor = monitor
        self.plateau = plateau or {}
        self.counters = counters or {}
        self.baseline = baseline
        self.extra = extra or {}
        os.makedirs(folder, exist_ok=True)

    def best_epoch(self):
        """1-based epoch with the best `monitor` score in the history, 0 when none beats the
        baseline, or None before the first epoch."""
        values = self.history.get(self.monitor, [])
        if not values:
            return None
        lower = MONITOR_MODES[self.monitor] == "min"
        best = int(np.argmin(values) if lower else np.argmax(values))
        if self.baseline is not None and not (values[best] < self.baseline if lower
                                              else values[best] > self.baseline):
            return 0
        # Epochs of an older run that did not log this score are missing from the front.
        return best + 1 + len(self.history["loss"]) - len(values)

    def on_train_begin(self, logs=None):
        for name, callback in self.plateau.items():
            for attr, value in self.counters.get(name, {}).items():
                setattr(callback, attr, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {**(logs or {}), "epoch_seconds": time.time() - self.epoch_start}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.counters = {
            name: {attr: None if getattr(cb, attr) is None else float(getattr(cb, attr))
                   for attr in self.COUNTERS if hasattr(cb, attr)}
            for name, cb in self.plateau.items()}
        if self.best_epoch() == len(self.history["loss"]):
            with atomic_path(os.path.join(self.folder, "best.weights.h5")) as tmp:
                self.model.save_weights(tmp)
        with atomic_path(os.path.join(self.folder, "last.keras")) as tmp:
            self.model.save(tmp)
        write_json(os.path.join(self.folder, "state.json"),
                   {**self.extra, "epochs_done": epoch + 1, "monitor": self.monitor,
                    "best_epoch": self.best_epoch(), "baseline": self.baseline,
                    "counters": self.counters, "history": self.history})


class ValidationMetrics(keras.callbacks.Callback):
    """Adds each epoch's validation scores to its logs, from one pass over the validation data.

    `val_loss` and `val_accuracy` are what fit's own validation would log (the compiled loss,
    and accuracy at 0.5); `val_macro_f1` is the macro-F1 at its best threshold, which is what
    the model is judged by, so the curves show it, --monitor can pick the epoch by it and a
    benchmark can time how long a recipe takes to reach it. Computing all three from one set of
    predictions replaces fit(validation_data=...), which would run the model over the same
    images a second time every epoch. Must come before the callbacks that read the logs.
    """

    def __init__(self, scores):
        super().__init__()
        self.scores = scores  # model -> (labels, P(male), source) of the validation images

    def on_epoch_end(self, epoch, logs=None):
        y, scores, sources = self.scores(self.model)
        if logs is None or not len(y):
            return
        loss = self.model.loss(y[:, None].astype(np.float32), scores[:, None])
        logs["val_loss"] = float(keras.ops.convert_to_numpy(loss))
        logs["val_accuracy"] = float(np.mean((scores > 0.5) == (y == 1)))
        logs["val_macro_f1"] = metrics.best_threshold(y, scores, groups=sources)[1]


def validation_scores(model, val_ds, val, reader, verbose=0):
    """(labels, P(male), sources) for the validation images `val` (paths, labels, sources)
    that decoded (unreadable ones drop out)."""
    paths, labels, sources = val
    scores = model.predict(val_ds, verbose=verbose)[:, 0]
    keep = np.array([p not in reader.skipped for p in paths], dtype=bool)
    return np.asarray(labels)[keep], scores[keep], np.asarray(sources)[keep]


def load_checkpoint(folder):
    """Return (model, state) from a checkpoint folder, or (None, None) when there is none."""
    state_file = os.path.join(folder, "state.json")
    if not os.path.exists(state_file):
        return None, None
    with open(state_file) as f:
        state = json.load(f)
    model = keras.models.load_model(os.path.join(folder, "last.keras"))
    return model, state


# ---------------------------------------------------------------------------
# Head warm-up on cached features

def oversampled_views(plain, mirrored, readable, labels, args):
    """(x, y, sample weight) from cached features: each image of the oversampled training set
    as is and mirrored, weighted by its class (0 for an image that did not decode)."""
    index = data.oversample_indices(labels, args.oversample, args.seed)
    x = np.concatenate([plain[index], mirrored[index]])
    y = np.tile(np.asarray(labels, np.float32)[index], 2)
    weight = np.tile(np.asarray(args.class_weights)[labels[index]] * readable[index], 2)
    return x, y, weight.astype(np.float32)


def warm_up_head(model, train, val, args):
    """Train the head alone on cached backbone features, mirrored views included.

    A random head on top of a pretrained backbone sends large, noisy gradients into it; starting
    the fine-tune from a trained head avoids that, and costs seconds once the features exist.
    """
    (train_paths, train_labels, _), (val_paths, val_labels, _) = train, val
    print("head warm-up: backbone features (cached in " + args.cache_dir + ")")
    plain, mirrored, ok = features.pooled_features(model, train_paths, args.cache_dir,
                                                   args.batch_size, args.verbose)
    val_x, _, val_ok = features.pooled_features(model, val_paths, args.cache_dir,
                                                args.batch_size, args.verbose)
    x, y, weight = oversampled_views(plain, mirrored, ok, train_labels, args)
    # The same layer objects: training them here trains the full model's head.
    head_layers = model.get_layer("head").layers[1:]
    on_features = keras.Sequential([keras.Input((x.shape[1],))] + head_layers)
    on_features.compile(optimizer=keras.optimizers.Adam(args.warmup_learning_rate),
                        loss=BinaryFocalLoss(args.focal_alpha, args.focal_gamma),
                        metrics=["accuracy"])
    on_features.fit(x, y, sample_weight=weight, batch_size=args.batch_size,
                    epochs=args.warmup_epochs, shuffle=True,
                    validation_data=(val_x[val_ok], np.asarray(val_labels, np.float32)[val_ok]),
                    callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=5,
                                                             restore_best_weights=True)],
                    verbose=2 if args.verbose else 0)


def fine_tune_top_blocks(model, train, val, args, checkpoint_dir):
    """Fine-tune the backbone's top blocks and the head on cached feature maps of those below.

    The blocks under `model_lib.FEATURE_MAP_LAYER` stay frozen, so each image goes through them
    once (then from the cache) instead of every epoch, and an epoch costs a fraction of an
    end-to-end one; the price is no augmentation but the mirror. Keeps the epoch with the best
    `--monitor` score. Returns (that score, the stage's history); each epoch's scores are also
    written to `feature_stage.json` in `checkpoint_dir` as they come, and the kept weights to
    `best.weights.h5` there, where the end-to-end fine-tune starts from them.
    """
    (train_paths, train_labels, _), (val_paths, val_labels, val_sources) = train, val
    layer = model_lib.FEATURE_MAP_LAYER
    print(f"top-block fine-tune: feature maps at {layer} (cached in {args.cache_dir})")
    plain, mirrored, ok = features.feature_maps(model, layer, train_paths, args.cache_dir,
                                                args.batch_size, args.verbose)
    val_x, _, val_ok = features.feature_maps(model, layer, val_paths, args.cache_dir,
                                             args.batch_size, args.verbose)
    x, y, weight = oversampled_views(plain, mirrored, ok, train_labels, args)
    val_x, y_val = val_x[val_ok], np.asarray(val_labels)[val_ok]
    val_sources = np.asarray(val_sources)[val_ok]

    on_maps = model_lib.top_on_feature_maps(model, layer)  # shares the layers of `model`
    on_maps.compile(optimizer=keras.optimizers.Adam(args.feature_learning_rate),
                    loss=BinaryFocalLoss(args.focal_alpha, args.focal_gamma),
                    metrics=["accuracy"])
    history, started = {}, [time.time()]

    def record(epoch, logs):
        logs = {**logs, "epoch_seconds": time.time() - started[0]}
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        write_json(os.path.join(checkpoint_dir, "feature_stage.json"), {"history": history})
        started[0] = time.time()

    def scores(on_maps):
        return (y_val, on_maps.predict(val_x, batch_size=args.batch_size, verbose=0)[:, 0],
                val_sources)

    keep_best = keras.callbacks.EarlyStopping(args.monitor, mode=MONITOR_MODES[args.monitor],
                                              patience=args.patience,
                                              restore_best_weights=True)
    os.makedirs(checkpoint_dir, exist_ok=True)
    on_maps.fit(x, y, sample_weight=weight, batch_size=args.batch_size,
                epochs=args.feature_epochs, shuffle=True,
                callbacks=[ValidationMetrics(scores), keep_best,
                           keras.callbacks.LambdaCallback(on_epoch_end=record)],
                verbose=args.verbose)
    # The weights file carries the optimizer too; built now, it matches the one that the
    # end-to-end fine-tune will have built when it loads the file back.
    if getattr(model, "optimizer", None) is not None:
        model.optimizer.build(model.trainable_variables)
    with atomic_path(os.path.join(checkpoint_dir, "best.weights.h5")) as tmp:
        model.save_weights(tmp)
    print(f"top-block fine-tune: kept epoch {keep_best.best_epoch + 1}, validation "
          f"{args.monitor} {keep_best.best:.4f}")
    return float(keep_best.best), history


# ---------------------------------------------------------------------------
# Outputs

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
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy, replicas = distribution_strategy(args.strategy)
    # Each replica gets --batch_size images, so the global batch grows with the replica count.
    batch_size = args.batch_size * replicas
    if replicas > 1:
        print(f"{args.strategy} strategy: {replicas} replicas, global batch {batch_size}")
    train_set, val_set, val_source, val_names = split_data(args)
    (train_paths, train_labels, train_sources), (val_paths, val_labels, _) = train_set, val_set
    counts = np.bincount(train_labels, minlength=2)
    print(f"training images: {counts[0]} female, {counts[1]} male; validation: "
          f"{np.sum(val_labels == 0)} female, {np.sum(val_labels == 1)} male ({val_source})")

    checkpoint_dir = args.checkpoint_dir or os.path.splitext(args.output)[0] + "_checkpoints"
    with strategy.scope():
        model, state = load_checkpoint(checkpoint_dir) if args.resume else (None, None)
        if args.resume and model is None:
            print(f"no checkpoint in {checkpoint_dir}; starting from scratch")
        if model is None:
            model = model_lib.build_model(args.image_size, args.weights, args.trainable_layers,
                                          args.dense_units, args.dropout, args.init_model)
            model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                          loss=BinaryFocalLoss(args.focal_alpha, args.focal_gamma),
                          metrics=["accuracy"], jit_compile=args.xla)
            state = {"epochs_done": 0, "history": {}}
            if args.init_model:
                print(f"starting from the weights of {args.init_model}; no head warm-up")
            elif args.warmup_epochs > 0:
                warm_up_head(model, train_set, val_set, args)
            if args.feature_epochs > 0:
                state["baseline"], stage = fine_tune_top_blocks(
                    model, train_set, val_set, args, checkpoint_dir)
                state["feature_stage"] = {"history": stage}
        else:
            print(f"resuming from {checkpoint_dir} after epoch {state['epochs_done']}")
            if state.get("monitor", "val_loss") != args.monitor:
                print(f"note: the kept best epoch was picked by {state.get('monitor', 'val_loss')}"
                      f"; from now on --monitor {args.monitor} picks it")
                # Counters and a baseline kept for another score would compare unlike numbers.
                state.pop("counters", None)
                state.pop("baseline", None)
    image_size = model_lib.input_size(model)

    reader = data.ImageReader(image_size)
    train_ds = data.make_train_dataset(train_paths, train_labels, reader, batch_size,
                                       args.oversample, args.augment, args.seed,
                                       class_weights=dict(enumerate(args.class_weights)),
                                       sources=train_sources,
                                       source_weights=source_weights(args, train_sources),
                                       degrade=args.degrade)
    steps_per_epoch = epoch_steps(args, train_labels, train_sources, batch_size)
    val_ds = data.make_train_dataset(val_paths, val_labels, reader, batch_size,
                                     oversample=0, augment=False, shuffle=False, cache=True)
    mode = MONITOR_MODES[args.monitor]
    plateau = {
        # With a top-block stage, `patience` epochs that do not beat it also stop the run.
        "early_stopping": keras.callbacks.EarlyStopping(args.monitor, mode=mode,
                                                        patience=args.patience,
                                                        baseline=state.get("baseline")),
        "reduce_lr": keras.callbacks.ReduceLROnPlateau(args.monitor, mode=mode,
                                                       factor=args.lr_factor,
                                                       patience=args.lr_patience, min_lr=1e-7),
    }
    checkpoint = EpochCheckpoint(checkpoint_dir, state["history"], args.monitor, plateau,
                                 state.get("counters"), state.get("baseline"),
                                 {"feature_stage": state["feature_stage"]}
                                 if "feature_stage" in state else None)
    # Order matters: the validation scores join the logs first, and the checkpoint sees the
    # epoch last.
    scores = functools.partial(validation_scores, val_ds=val_ds, val=val_set, reader=reader)
    callbacks = [ValidationMetrics(scores), *plateau.values(), checkpoint]
    if state["epochs_done"] < args.epochs:
        model.fit(train_ds, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                  initial_epoch=state["epochs_done"], callbacks=callbacks,
                  shuffle=False,  # the pipeline shuffles
                  verbose=args.verbose)
    history = checkpoint.history
    best_file = os.path.join(checkpoint_dir, "best.weights.h5")
    if os.path.exists(best_file):
        model.load_weights(best_file)  # the best epoch by --monitor, even across a resume

    # Tune the decision threshold on the validation data for the best macro-F1.
    # The validation pipeline keeps its decoded images cached; unreadable files are dropped.
    y_val, scores, val_sources = validation_scores(model, val_ds, val_set, reader, args.verbose)
    threshold, _ = metrics.best_threshold(y_val, scores, groups=val_sources)
    report = metrics.evaluation_report(y_val, scores, threshold)
    val_losses = history.get("val_loss", [])
    sidecar = {
        "class_names": list(CLASS_NAMES),
        "input_size": image_size,
        "input": "RGB pixels 0..255, resized to input_size x input_size",
        "output": "P(male)",
        "threshold": threshold,
        "threshold_source": (f"best macro-F1 on the validation data ({val_source})"
                             if len(val_names) == 1 else "best worst-source macro-F1 over the "
                             f"validation sources ({val_source})"),
        # Each validation source's scores at the threshold, so a user sees who it serves.
        "validation_sources": metrics.group_table([val_names[s] for s in val_sources], y_val,
                                                  scores, threshold),
        "validation": {k: report[k] for k in ("macro_f1", "accuracy", "per_class_accuracy",
                                               "confusion_matrix")},
        "epochs_run": len(val_losses),
        # 0: no end-to-end epoch beat the top-block fine-tune on cached feature maps.
        "best_epoch": checkpoint.best_epoch(),
        "best_epoch_by": args.monitor,
        "feature_stage": state.get("feature_stage"),
        # Wall time of this process, warm-up and threshold tuning included (not earlier runs
        # that this one resumed).
        "training_seconds_this_run": round(time.time() - start, 1),
        # Fine-tuning epochs of every run that led here, resumed ones included.
        "epoch_seconds_all_runs": round(sum(history.get("epoch_seconds", [])), 1),
        "unreadable_images": sorted(reader.skipped),
        "config": vars(args),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    model_lib.save_model(model, args.output, sidecar)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    plots.save(plots.training_curves_figure(history), os.path.join(out_dir, "training_curves.png"))
    architecture = save_architecture(model, out_dir)

    print(f"\nvalidation at threshold {threshold:.2f} (tuned for macro-F1):")
    print(report["report_text"])
    for name, (ok, n) in report["per_class_accuracy"].items():
        print(f"  {name:>6} accuracy: {ok}/{n}")
    print(f"wrote {args.output}, {model_lib.sidecar_path(args.output)}, "
          f"{os.path.join(out_dir, 'training_curves.png')}, {architecture}")
    if reader.skipped:
        print(f"skipped {len(reader.skipped)} unreadable image(s); listed in the sidecar")


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except (DataError, ModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
