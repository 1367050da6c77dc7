"""What happens at the end of every training epoch: validation scores, history, checkpoints.

Three Keras callbacks and the small state a checkpoint keeps, so an interrupted run resumes
from its last finished epoch and stops where an uninterrupted one would.

Why not Keras' own `ModelCheckpoint` and `BackupAndRestore`: neither writes atomically (a run
killed during a save leaves a broken file where the last good one was), and neither keeps the
patience counters of EarlyStopping and ReduceLROnPlateau, so a resumed run would wait its full
patience again.
"""

import dataclasses
import fcntl
import glob
import json
import logging
import os
import time

import numpy as np

import keras

from facegender.core.common import ModelError, UsageError
from facegender.core.outputs import atomic_path, write_json
from facegender.evaluation import metrics
from facegender.training.config import MONITOR_MODES

log = logging.getLogger(__name__)


def threshold_criterion(monitor):
    """What the decision threshold is chosen for under `monitor` (metrics.CRITERIA): the
    score that picked the epoch also picks the threshold."""
    return "worst_recall" if monitor == "val_worst_recall" else "macro_f1"


def is_better(value, than, monitor):
    return value < than if MONITOR_MODES[monitor] == "min" else value > than


@dataclasses.dataclass
class TrainingState:
    """What a checkpoint folder's `state.json` holds about the run so far."""
    epochs_done: int = 0
    history: dict = dataclasses.field(default_factory=dict)
    monitor: str = "val_loss"
    best_epoch: int | None = None
    # The --monitor score of the top-block stage's weights; an end-to-end epoch must beat it.
    baseline: float | None = None
    counters: dict = dataclasses.field(default_factory=dict)
    feature_stage: dict | None = None
    # The flags that made the checkpoint's model (RESUME_FLAGS): a resume must not contradict
    # them. Checkpoints from before this was kept have none.
    flags: dict | None = None

    @classmethod
    def load(cls, path):
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


# Flags that the checkpoint's model is made of (its input size, crop, head, loss and
# optimizer are saved in `last.keras`): a resume given other values would silently train the
# old model while its sidecar said otherwise.
RESUME_FLAGS = ("image_size", "face_geometry", "dense_units", "dropout", "trainable_layers",
                "focal_alpha", "focal_gamma", "learning_rate", "mixed_precision")


def resume_flags(config):
    """The RESUME_FLAGS of a run's TrainConfig, as JSON values (the face geometry as
    KIND:SCALE or none, so that 'aligned' and 'aligned:1.0' are the same)."""
    flags = {flag: getattr(config, flag) for flag in RESUME_FLAGS}
    geometry = config.geometry
    flags["face_geometry"] = geometry and f"{geometry.kind}:{geometry.scale:g}" or "none"
    return flags


def check_resume(state, config, input_size, folder):
    """Raise a UsageError naming the first flag of this run that contradicts the checkpoint in
    `folder`. `input_size` is the checkpoint model's, for checkpoints that kept no flags."""
    saved = dict(state.flags or {})
    saved.setdefault("image_size", input_size)
    for flag, value in resume_flags(config).items():
        if flag in saved and saved[flag] != value:
            raise UsageError(
                f"--resume: --{flag} {value} contradicts the checkpoint in {folder}, made with "
                f"--{flag} {saved[flag]}; pass --{flag} {saved[flag]} (or leave it out if that "
                "is the default), or start over without --resume")


def load_checkpoint(folder):
    """Return (model, TrainingState) from a checkpoint folder, or (None, None) when there is
    none. A damaged or half-written checkpoint is a ModelError naming the file and what to do,
    never a traceback or a silently wrong start."""
    state_file = os.path.join(folder, "state.json")
    if not os.path.exists(state_file):
        return None, None
    start_over = (f"start over without --resume (delete {folder} or pass another "
                  "--checkpoint_dir), or --init_model a model you saved before")
    try:
        state = TrainingState.load(state_file)
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"{state_file}: damaged checkpoint state ({err}); {start_over}"
                         ) from None
    last = os.path.join(folder, "last.keras")
    try:
        model = keras.models.load_model(last)
    except Exception as err:  # Keras reports a truncated zip as anything from OSError on
        raise ModelError(f"{last}: damaged or missing checkpoint model "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                         f"{start_over}") from None
    best = os.path.join(folder, "best.weights.h5")
    if os.path.exists(best) and not readable_weights(best):
        raise ModelError(f"{best}: damaged best-epoch weights; {start_over}")
    return model, state


def readable_weights(path):
    """Whether `path` is a complete HDF5 file (a save killed half-way is not)."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)
        return True
    except (OSError, ValueError):
        return False


class CheckpointFolder:
    """Holds a checkpoint folder for one training run at a time.

    An exclusive `flock` on `.lock` in the folder: a second run given the same folder is
    refused while the first holds it, and the lock goes with the process that held it, so a
    killed run leaves nothing stuck. Holding it, the run deletes what an interrupted save left
    behind (`.partial-*` files, written only by a run that holds the lock).
    """

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.file = open(os.path.join(folder, ".lock"), "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise UsageError(f"{folder}: in use by another training run ({holder}); wait for "
                             "it to finish, or pass another --checkpoint_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        self.removed = self.remove_partials()

    def remove_partials(self):
        leftovers = glob.glob(os.path.join(self.folder, ".partial-*"))
        for path in leftovers:
            os.remove(path)
        return leftovers

    def release(self):
        self.file.close()  # closing the file releases the lock


class ValidationMetrics(keras.callbacks.Callback):
    """Adds each epoch's validation scores to its logs, from one pass over the validation data.

    `val_loss` and `val_accuracy` are what fit's own validation would log (the compiled loss,
    and accuracy at 0.5); `val_macro_f1` is the macro-F1 at its best threshold (with several
    validation sources: the worst source's macro-F1 at the one threshold that serves them all),
    which is what the model is judged by; `val_worst_recall` the lowest recall of any
    (source, class) at the threshold that raises it most. Computing all four from one set of
    predictions replaces fit(validation_data=...), which would run the model over the same
    images a second time every epoch. Must come before the callbacks that read the logs.
    """

    def __init__(self, scores, names=None):
        super().__init__()
        self.scores = scores  # model -> (labels, P(male), source) of the validation images
        self.names = names  # a name per source: with several, the worst one is logged

    def on_epoch_end(self, epoch, logs=None):
        y, scores, sources = self.scores(self.model)
        if logs is None or not len(y):
            return
        loss = self.model.loss(y[:, None].astype(np.float32), scores[:, None])
        logs["val_loss"] = float(keras.ops.convert_to_numpy(loss))
        logs["val_accuracy"] = float(np.mean((scores > 0.5) == (y == 1)))
        threshold, logs["val_macro_f1"] = metrics.best_threshold(y, scores, groups=sources)
        recall_at, logs["val_worst_recall"] = metrics.best_threshold(
            y, scores, groups=sources, criterion="worst_recall")
        if self.names and len(self.names) > 1:
            # Keras' logs hold numbers only, so which source held the score down is a message.
            rows = metrics.group_table([self.names[s] for s in sources], y, scores, threshold)
            worst = min(rows, key=lambda r: r["macro_f1"])
            log.info(f"epoch {epoch + 1}: worst validation source {worst['group']}, macro-F1 "
                     f"{worst['macro_f1']:.4f} at threshold {threshold:.2f}")
            rows = metrics.group_table([self.names[s] for s in sources], y, scores, recall_at)
            cells = [(c / n, f"{r['group']} {name}") for r in rows for name in ("female", "male")
                     for c, n in [r[name]] if n >= metrics.MIN_RECALL_CELL]
            if cells:
                recall, cell = min(cells)
                log.info(f"epoch {epoch + 1}: worst validation recall {cell}, {recall:.4f} at "
                         f"threshold {recall_at:.2f}")


class HistoryRecorder(keras.callbacks.Callback):
    """Appends every epoch's logs and wall time to `history` and writes it to `path` as JSON,
    so a long stage's scores can be read while it runs and survive a kill."""

    def __init__(self, path, history=None):
        super().__init__()
        self.path = path
        self.history = history if history is not None else {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.record(logs)
        write_json(self.path, self.saved())

    def record(self, logs):
        logs = {**(logs or {}), "epoch_seconds": time.time() - self.epoch_start}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def saved(self):
        return {"history": self.history}


class EpochCheckpoint(HistoryRecorder):
    """After every epoch, atomically save the full training state to `folder`.

    `last.keras` holds the model with its optimizer (learning rate included), `best.weights.h5`
    the weights of the epoch with the best `monitor` score so far, and `state.json` a
    `TrainingState`: the epoch count, the history (with each epoch's wall time) and the patience
    counters of the `plateau` callbacks (EarlyStopping, ReduceLROnPlateau). So a resumed run draws
    complete curves, restores the true best weights, stops or cuts the learning rate at the epoch
    an uninterrupted run would, and can say how long the whole training took. List it after the
    `plateau` callbacks, so that it saves their counters after they have seen the epoch and
    restores them after fit resets them.

    `state.baseline` is the `monitor` score of the weights the run started from when they were
    trained on cached feature maps (--feature_epochs); their `best.weights.h5` stays the best
    until an epoch beats that score.
    """

    COUNTERS = ("wait", "best", "cooldown_counter")

    def __init__(self, folder, state=None, plateau=None):
        self.folder = folder
        self.state = state or TrainingState()
        super().__init__(os.path.join(folder, "state.json"), self.state.history)
        self.plateau = plateau or {}
        os.makedirs(folder, exist_ok=True)

    @property
    def monitor(self):
        return self.state.monitor

    def best_epoch(self):
        """1-based epoch with the best `monitor` score in the history, 0 when none beats the
        baseline, or None before the first epoch."""
        values = self.history.get(self.monitor, [])
        if not values:
            return None
        lower = MONITOR_MODES[self.monitor] == "min"
        best = int(np.argmin(values) if lower else np.argmax(values))
        baseline = self.state.baseline
        if baseline is not None and not is_better(values[best], baseline, self.monitor):
            return 0
        # Epochs of an older run that did not log this score are missing from the front.
        return best + 1 + len(self.history["loss"]) - len(values)

    def on_train_begin(self, logs=None):
        for name, callback in self.plateau.items():
            for attr, value in self.state.counters.get(name, {}).items():
                setattr(callback, attr, value)

    def on_epoch_end(self, epoch, logs=None):
        self.state.counters = {
            name: {attr: None if getattr(cb, attr) is None else float(getattr(cb, attr))
                   for attr in self.COUNTERS if hasattr(cb, attr)}
            for name, cb in self.plateau.items()}
        self.state.epochs_done = epoch + 1
        self.record(logs)
        self.state.best_epoch = self.best_epoch()
        if self.state.best_epoch == len(self.history["loss"]):
            with atomic_path(os.path.join(self.folder, "best.weights.h5")) as tmp:
                self.model.save_weights(tmp)
        with atomic_path(os.path.join(self.folder, "last.keras")) as tmp:
            self.model.save(tmp)
        write_json(self.path, self.saved())

    def saved(self):
        return dataclasses.asdict(self.state)
