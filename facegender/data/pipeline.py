"""The `tf.data` pipeline that feeds training: shuffled, oversampled, source-weighted batches
of decoded images (decoding.ImageReader, run inside the pipeline) with augmentation (augment.py).

Only training imports it: scoring decodes in inference.py's threads, without TensorFlow.
"""

import os

import numpy as np
import tensorflow as tf

from facegender.data import augment as augment_lib  # `augment` is make_train_dataset's switch
from facegender.data import splits


def tf_decode(reader, path):
    """(image, readable flag) tensors of one file path tensor, decoded by `reader` (a
    decoding.ImageReader) inside the pipeline."""
    image, ok = tf.numpy_function(reader, [path], [tf.uint8, tf.bool])
    image.set_shape((reader.image_size, reader.image_size, 3))
    ok.set_shape(())
    return image, ok


def weighted_examples(paths, labels, oversample, seed, shuffle, class_weights):
    """A dataset of (path, label, class weight) over the oversampled images, shuffled."""
    index = splits.oversample_indices(labels, oversample, seed)
    labels = np.asarray(labels)[index]
    weights = np.ones(len(labels), np.float32)
    if class_weights is not None:
        weights = np.asarray([class_weights[int(y)] for y in labels], np.float32)
    # Paths as the file system's bytes: a name that is not valid UTF-8 (a lone surrogate once
    # os.fsdecode'd) cannot become a TensorFlow string; ImageReader decodes them back.
    names = np.asarray([os.fsencode(p) for p in np.asarray(paths, dtype=str)], dtype=object)
    ds = tf.data.Dataset.from_tensor_slices(
        (names[index], labels.astype(np.float32), weights))
    if shuffle:
        ds = ds.shuffle(len(index), seed=seed, reshuffle_each_iteration=True)
    return ds


def make_train_dataset(paths, labels, reader, batch_size=32, oversample=1.0, augment=True,
                       seed=0, shuffle=True, class_weights=None, sources=None,
                       source_weights=None, degrade=0.0, zoom=(-0.2, 0.2), grayscale=0.0):
    """Shuffled, oversampled, augmented batches of (image, label, sample weight).

    Images are float32 in 0..255. The sample weight carries the class weights (`class_weights`
    maps class index to weight) and is 0 for an unreadable file, which is listed in
    `reader.skipped` and so drops out of the loss and the metrics while the dataset keeps a
    known length.

    With `source_weights`, `sources` gives each image's source index and each source is
    oversampled and shuffled on its own; every image is then drawn from source k with
    probability `source_weights[k]` (normalised), so one large source does not drown a small
    one. A "source" is any group of images to be drawn at its own rate: train_model.py makes
    one per (data folder, age band) to draw every age band of a folder equally often. That
    dataset repeats without end: pass `steps_per_epoch` to fit.
    """
    if source_weights is None:
        ds = weighted_examples(paths, labels, oversample, seed, shuffle, class_weights)
    else:
        paths, labels, sources = np.asarray(paths, dtype=str), np.asarray(labels), \
            np.asarray(sources)
        parts = [weighted_examples(paths[sources == k], labels[sources == k], oversample,
                                   seed + k, True, class_weights).repeat()
                 for k in range(len(source_weights))]
        share = np.asarray(source_weights, np.float64) / np.sum(source_weights)
        ds = tf.data.Dataset.sample_from_datasets(parts, share.tolist(), seed=seed)

    def decode(path, label, weight):
        image, ok = tf_decode(reader, path)
        return image, label, weight * tf.cast(ok, tf.float32)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    augmentation = (augment_lib.make_augmentation(seed, degrade, zoom, grayscale) if augment
                    else None)

    @tf.autograph.experimental.do_not_convert  # plain tensor code; spares a noisy warning
    def to_float(images, label, weight):
        images = tf.cast(images, tf.float32)
        if augmentation is not None:
            images = augmentation(images, training=True)
        return images, label, weight

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
