"""The two cheap training stages that run on cached backbone features, before the fine-tune.

1. Head warm-up: the head alone, on pooled features of the frozen backbone. A random head on
   top of a pretrained backbone sends large, noisy gradients into it; starting the fine-tune
   from a trained head avoids that, and costs seconds once the features exist.
2. Top blocks: the backbone's top blocks and the head, on feature maps of the frozen blocks
   below `model.FEATURE_MAP_LAYER`. Each image goes through the costly lower blocks once
   instead of every epoch; the price is no augmentation but the mirror.

Both fit on the cached arrays through `fit_on_cached`, which keeps the epoch the monitored score
likes best. The arrays may be memory-mapped files far larger than memory: batches are gathered
from them one at a time.
"""

import functools
import logging
import os

import numpy as np

import keras

from facegender.data import splits
from facegender.training import features
from facegender.model import network as model_lib
from facegender.training.callbacks import HistoryRecorder, ValidationMetrics
from facegender.training.config import MONITOR_MODES
from facegender.model.losses import BinaryFocalLoss
from facegender.core.outputs import atomic_path

log = logging.getLogger(__name__)

class CachedBatches(keras.utils.PyDataset):
    """Batches of (features, label, sample weight) gathered from cached arrays, shuffled anew
    every epoch: each image of `index` as is (`plain`) and mirrored (`mirrored`), weighted by its
    class and 0 when it did not decode. Only one batch is in memory at a time."""

    def __init__(self, plain, mirrored, index, labels, weights, batch_size, seed=0):
        super().__init__()
        self.views = (plain, mirrored)
        # Every (view, image) pair once per epoch.
        self.pairs = np.stack([np.repeat([0, 1], len(index)), np.tile(index, 2)], axis=1)
        self.labels = np.asarray(labels, np.float32)
        self.weights = np.asarray(weights, np.float32)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return -(-len(self.pairs) // self.batch_size)

    def __getitem__(self, i):
        batch = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        x = np.empty((len(batch),) + self.views[0].shape[1:], np.float32)
        for view in (0, 1):
            rows = batch[batch[:, 0] == view]
            # Sorted reads are sequential on a memory-mapped file.
            sort = np.argsort(rows[:, 1])
            x[np.flatnonzero(batch[:, 0] == view)[sort]] = self.views[view][rows[sort, 1]]
        return x, self.labels[batch[:, 1]], self.weights[batch[:, 1]]

    def on_epoch_end(self):
        self.order = self.pairs[self.rng.permutation(len(self.pairs))]


def training_batches(plain, mirrored, readable, labels, config):
    """`CachedBatches` over the oversampled training images, weighted by the class weights."""
    labels = np.asarray(labels)
    index = splits.oversample_indices(labels, config.oversample, config.seed)
    weights = np.asarray(config.class_weights)[labels] * np.asarray(readable)
    return CachedBatches(plain, mirrored, index, labels, weights, config.batch_size, config.seed)


def fit_on_cached(trainable, batches, val, learning_rate, epochs, monitor, patience, config,
                  callbacks=(), verbose=None):
    """Fit `trainable` on cached `batches` with the card's focal loss, validate on `val`
    (features, labels, sources) every epoch, and keep the epoch `monitor` likes best.

    Returns the EarlyStopping callback, whose `best` is the kept epoch's score."""
    val_x, val_y, val_sources = val
    trainable.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=BinaryFocalLoss(config.focal_alpha, config.focal_gamma),
                      metrics=["accuracy"])

    def scores(model):
        return val_y, model.predict(val_x, batch_size=config.batch_size, verbose=0)[:, 0], \
            val_sources

    keep_best = keras.callbacks.EarlyStopping(monitor, mode=MONITOR_MODES[monitor],
                                              patience=patience, restore_best_weights=True)
    trainable.fit(batches, epochs=epochs, verbose=config.verbose if verbose is None else verbose,
                  callbacks=[ValidationMetrics(scores), keep_best, *callbacks])
    return keep_best


def cached_validation(extract, val, config):
    """(features, labels, sources) of the validation images that decoded."""
    x, _, ok = extract(val.paths)
    return np.asarray(x)[ok], np.asarray(val.labels)[ok], np.asarray(val.sources)[ok]


def warm_up_head(model, train, val, config, reader=None):
    """Train the head of `model` alone on cached pooled features, mirrored views included;
    `reader` decodes the images (decoding.ImageReader: cut to the run's face geometry)."""
    log.info("head warm-up: backbone features (cached in " + config.cache_dir + ")")
    extract = functools.partial(features.pooled_features, model, cache_dir=config.cache_dir,
                                batch_size=config.batch_size, verbose=config.verbose, reader=reader)
    plain, mirrored, ok = extract(train.paths)
    # The same layer objects: training them here trains the full model's head.
    head = model_lib.head_of(model)
    on_features = keras.Sequential([keras.Input(plain.shape[1:])] + head.layers[1:])
    fit_on_cached(on_features, training_batches(plain, mirrored, ok, train.labels, config),
                  cached_validation(extract, val, config), config.warmup_learning_rate,
                  config.warmup_epochs, "val_loss", 5, config, verbose=2 if config.verbose else 0)


def fine_tune_top_blocks(model, train, val, config, checkpoint_dir, reader=None):
    """Fine-tune the backbone's top blocks and the head on cached feature maps of those below.

    Keeps the epoch with the best `--monitor` score. Returns (that score, the stage's history);
    each epoch's scores are also written to `feature_stage.json` in `checkpoint_dir` as they
    come, and the kept weights to `best.weights.h5` there, where the end-to-end fine-tune
    starts from them.
    """
    layer = model_lib.FEATURE_MAP_LAYER
    log.info(f"top-block fine-tune: feature maps at {layer} (cached in {config.cache_dir})")
    extract = functools.partial(features.feature_maps, model, layer, cache_dir=config.cache_dir,
                                batch_size=config.batch_size, verbose=config.verbose, reader=reader)
    plain, mirrored, ok = extract(train.paths)
    on_maps = model_lib.top_on_feature_maps(model, layer)  # shares the layers of `model`
    os.makedirs(checkpoint_dir, exist_ok=True)
    recorder = HistoryRecorder(os.path.join(checkpoint_dir, "feature_stage.json"))
    keep_best = fit_on_cached(on_maps, training_batches(plain, mirrored, ok, train.labels, config),
                              cached_validation(extract, val, config),
                              config.feature_learning_rate, config.feature_epochs, config.monitor,
                              config.patience, config, [recorder])
    # The weights file carries the optimizer too; built now, it matches the one that the
    # end-to-end fine-tune will have built when it loads the file back.
    if getattr(model, "optimizer", None) is not None:
        model.optimizer.build(model.trainable_variables)
    with atomic_path(os.path.join(checkpoint_dir, "best.weights.h5")) as tmp:
        model.save_weights(tmp)
    log.info(f"top-block fine-tune: kept epoch {keep_best.best_epoch + 1}, validation "
             f"{config.monitor} {keep_best.best:.4f}")
    return float(keep_best.best), recorder.history
