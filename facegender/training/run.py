"""One training run, from a TrainConfig (facegender.training.config) to the saved model: the
data plan, the model built or resumed, the cached-feature stages, the end-to-end fine-tune, the
tuned threshold, the sidecar, the curves and the validation report.

The command line (train_model.py, facegender.cli.train) builds the config, calls `train` and
prints the `TrainingResult` it returns (result.training_report). What the run is doing on the
way (the data plan, resuming, the stages) goes to this module's logger (core.messages).
"""

import dataclasses
import functools
import glob
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from facegender.core.common import CLASS_NAMES
from facegender.core.outputs import atomic_path, write_text
from facegender.data import decoding, listing, pipeline, splits
from facegender.drawing import plots
from facegender.evaluation import metrics
from facegender.model import network as model_lib
from facegender.model.losses import BinaryFocalLoss
from facegender.model.sidecar import sidecar_path
from facegender.runtime import inference
from facegender.training import stages
from facegender.training.callbacks import (CheckpointFolder, EpochCheckpoint, TrainingState,
                                           ValidationMetrics, check_resume, load_checkpoint,
                                           resume_flags, threshold_criterion)
from facegender.training.config import MONITOR_MODES
from facegender.training.result import TrainingResult

log = logging.getLogger(__name__)


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

def portable_config(config):
    """The flags, with every path cut to what names it on any machine: data folders by their
    short names ("utkface/dev"), files by their base names."""
    flags = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    for flag in ("data_path", "val_path"):
        if flags[flag]:
            flags[flag] = listing.source_names(flags[flag])
    for flag in ("output", "init_model", "weights", "checkpoint_dir"):
        if flags[flag] and flags[flag] not in ("imagenet", "none"):
            flags[flag] = os.path.basename(os.path.normpath(flags[flag]))
    flags.pop("cache_dir")  # a local folder; says nothing about the model
    flags.pop("geometry")  # the sidecar's face_geometry
    return flags


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


def train(config):
    """Data, model (built, or resumed from a checkpoint), the cached-feature stages, the
    end-to-end fine-tune, the threshold, the saved model; returns the `TrainingResult`."""
    checkpoint_dir = config.checkpoint_folder()
    # Held until the run ends: a second run on the same checkpoints is refused meanwhile.
    holder = CheckpointFolder(checkpoint_dir)
    try:
        leftovers = holder.removed + remove_partial_outputs(config)
        if leftovers:
            log.info(f"removed {len(leftovers)} file(s) left by an interrupted save: "
                     + ", ".join(map(os.path.basename, leftovers)))
        return run_training(config, checkpoint_dir)
    finally:
        holder.release()


def run_training(config, checkpoint_dir):
    start = time.time()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy, replicas = distribution_strategy(config.strategy)
    # Each replica gets --batch_size images, so the global batch grows with the replica count.
    batch_size = config.batch_size * replicas
    split = splits.split_data(config)
    describe(split, config, replicas, batch_size)
    # Faces are found once, before any training: every stage then reads cached landmarks.
    found = decoding.main_faces(split.train.paths + split.val.paths, config.geometry,
                            config.cache_dir, config.verbose)
    # One reader for every stage, so an unreadable image is warned about (and listed) once.
    # The model's input size is the run's: a resumed checkpoint of another size is refused.
    reader = decoding.ImageReader(config.image_size, config.geometry, found)
    with strategy.scope():
        model, state = build_or_resume(config, split, checkpoint_dir, reader)
    scores = functools.partial(validation_scores, val=split.val, batch_size=batch_size,
                               reader=reader)
    checkpoint = fine_tune(model, state, split.train, reader, batch_size, scores,
                           split.val_names, checkpoint_dir, config)
    return finish(model, checkpoint, scores(model, verbose=config.verbose), split, reader, config,
                  start)


def remove_partial_outputs(config):
    """Temporary files that a killed save of this run's outputs left beside them
    (outputs.atomic_path names them .partial-*.NAME)."""
    leftovers = []
    for path in config.written_files():
        folder, name = os.path.split(os.path.abspath(path))
        leftovers += glob.glob(os.path.join(glob.escape(folder), f".partial-*.{glob.escape(name)}"))
    for path in leftovers:
        os.remove(path)
    return leftovers


def describe(split, config, replicas, batch_size):
    """Log the data plan: the replicas, the images of each class, the draw and the sources."""
    if replicas > 1:
        log.info(f"{config.strategy} strategy: {replicas} replicas, global batch {batch_size}")
    counts = np.bincount(split.train.labels, minlength=2)
    val_labels = split.val.labels
    log.info(f"training images: {counts[0]} female, {counts[1]} male; validation: "
             f"{np.sum(val_labels == 0)} female, {np.sum(val_labels == 1)} male ({split.how})")
    if config.balance_by and any(split.train.strata):
        groups, shares = splits.draw_groups(config, split.train)
        names = listing.source_names(config.data_path)
        log.info(f"drawn by {' '.join(config.balance_by)}: " + ", ".join(
            f"{splits.group_name(names, key)} {np.sum(groups == g)} images ({shares[g]:.1%})"
            for g, key in enumerate(splits.strata_groups(split.train)[1])))
    log.info(f"validation groups: {', '.join(split.val_names)}")
    if len(config.data_path) > 1:
        sizes = np.bincount(split.train.sources, minlength=len(config.data_path))
        shares = splits.source_weights(config, split.train.sources)
        log.info("training sources: " + ", ".join(
            f"{path} {n} images" + ("" if shares is None else
                                    f" (drawn {shares[k] / sum(shares):.0%})")
            for k, (path, n) in enumerate(zip(config.data_path, sizes))))


def build_or_resume(config, split, checkpoint_dir, reader):
    """The model to fine-tune end to end, and the `TrainingState` of the run so far: resumed
    from `checkpoint_dir`, or built (from --init_model or --weights) and taken through the
    cached-feature stages the flags ask for, on the images `reader` decodes."""
    model, state = load_checkpoint(checkpoint_dir) if config.resume else (None, None)
    if config.resume and model is None:
        log.info(f"no checkpoint in {checkpoint_dir}; starting from scratch")
    if model is not None:
        check_resume(state, config, model_lib.input_size(model), checkpoint_dir)
        state.flags = state.flags or resume_flags(config)
        log.info(f"resuming from {checkpoint_dir} after epoch {state.epochs_done}")
        if state.monitor != config.monitor:
            log.info(f"note: the kept best epoch was picked by {state.monitor}; from now on "
                 f"--monitor {config.monitor} picks it")
            # Counters and a baseline kept for another score would compare unlike numbers.
            state.counters, state.baseline = {}, None
        state.monitor = config.monitor
        return model, state

    model = model_lib.build_model(config.image_size, config.weights, config.trainable_layers,
                                  config.dense_units, config.dropout, config.init_model)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=BinaryFocalLoss(config.focal_alpha, config.focal_gamma),
                  metrics=["accuracy"], jit_compile=config.xla)
    state = TrainingState(monitor=config.monitor, flags=resume_flags(config))
    if config.init_model:
        log.info(f"starting from the weights of {config.init_model}; no head warm-up")
    elif config.warmup_epochs > 0:
        stages.warm_up_head(model, split.train, split.val, config, reader)
    if config.feature_epochs > 0:
        state.baseline, stage = stages.fine_tune_top_blocks(model, split.train, split.val, config,
                                                            checkpoint_dir, reader)
        state.feature_stage = {"history": stage}
    return model, state


def fine_tune(model, state, train_set, reader, batch_size, scores, val_names, checkpoint_dir,
              config):
    """Fine-tune the whole network with augmentation, checkpointing every epoch; returns the
    checkpoint, whose history and best epoch span every run that led here."""
    groups, shares = splits.draw_groups(config, train_set)
    if config.as_given > 0 and config.geometry is not None:
        reader = reader.sometimes_as_given(config.as_given, config.seed)
    train_ds = pipeline.make_train_dataset(
        *train_set[:2], reader, batch_size, config.oversample, config.augment, config.seed,
        class_weights=dict(enumerate(config.class_weights)), sources=groups,
        source_weights=shares, degrade=config.degrade, zoom=tuple(config.zoom),
        grayscale=config.grayscale)
    mode = MONITOR_MODES[config.monitor]
    plateau = {
        # With a top-block stage, `patience` epochs that do not beat it also stop the run.
        "early_stopping": keras.callbacks.EarlyStopping(config.monitor, mode=mode,
                                                        patience=config.patience,
                                                        baseline=state.baseline),
        "reduce_lr": keras.callbacks.ReduceLROnPlateau(config.monitor, mode=mode,
                                                       factor=config.lr_factor,
                                                       patience=config.lr_patience, min_lr=1e-7),
    }
    checkpoint = EpochCheckpoint(checkpoint_dir, state, plateau)
    if state.epochs_done < config.epochs:
        # Order matters: the validation scores join the logs first, and the checkpoint sees
        # the epoch last.
        model.fit(train_ds, epochs=config.epochs, initial_epoch=state.epochs_done,
                  steps_per_epoch=splits.epoch_steps(config, train_set.labels, shares, batch_size),
                  callbacks=[ValidationMetrics(scores, val_names), *plateau.values(),
                             checkpoint],
                  shuffle=False,  # the pipeline shuffles
                  verbose=config.verbose)
    best_file = os.path.join(checkpoint_dir, "best.weights.h5")
    if os.path.exists(best_file):
        model.load_weights(best_file)  # the best epoch by --monitor, even across a resume
    return checkpoint


def finish(model, checkpoint, validation, split, reader, config, start):
    """Tune the decision threshold on the validation images, save the model with its sidecar
    and draw the curves; returns the `TrainingResult`: the validation report at that threshold
    and the files written."""
    y_val, scores, val_sources = validation
    # One threshold for every validation source: the one whose worst source does best, by
    # the score that picked the epoch.
    criterion = threshold_criterion(config.monitor)
    threshold, _ = metrics.best_threshold(y_val, scores, groups=val_sources, criterion=criterion)
    report = metrics.evaluation_report(y_val, scores, threshold)
    history = checkpoint.history
    sidecar = {
        **({"version": config.model_version} if config.model_version else {}),
        "class_names": list(CLASS_NAMES),
        "input_size": model_lib.input_size(model),
        "input": ("RGB pixels 0..255, resized to input_size x input_size" if config.geometry is None
                  else "RGB pixels 0..255 of the face cut by face_geometry (faces.py), at "
                       "input_size x input_size"),
        # The crop the model was trained on: test_script.py and predict.py feed it the same.
        "face_geometry": config.geometry and config.geometry.to_dict(),
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
        "best_epoch_by": config.monitor,
        "feature_stage": checkpoint.state.feature_stage,
        # Wall time of this process, warm-up and threshold tuning included (not earlier runs
        # that this one resumed).
        "training_seconds_this_run": round(time.time() - start, 1),
        # Fine-tuning epochs of every run that led here, resumed ones included.
        "epoch_seconds_all_runs": round(sum(history.get("epoch_seconds", [])), 1),
        "unreadable_images": sorted(reader.skipped),
        # Training and validation images in which no face was found: used as given.
        "images_without_a_face": len(decoding.faceless(split.train.paths + split.val.paths,
                                                   reader.faces, reader.skipped)),
        "config": portable_config(config),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    model_lib.save_model(model, config.output, sidecar)
    out_dir = os.path.dirname(os.path.abspath(config.output))
    curves = os.path.join(out_dir, "training_curves.png")
    plots.save(plots.training_curves_figure(history), curves)
    return TrainingResult(
        threshold=float(threshold), tuned_for=criterion, validation=report,
        validation_sources=tuple(sidecar["validation_sources"]), model=config.output,
        sidecar=sidecar_path(config.output), curves=curves,
        architecture=save_architecture(model, out_dir),
        unreadable_images=tuple(sidecar["unreadable_images"]), face_geometry=config.geometry,
        images_without_a_face=sidecar["images_without_a_face"])
