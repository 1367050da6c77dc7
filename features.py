"""Cached backbone features, for warming up the head in seconds instead of epochs.

The frozen backbone maps each image to the same features every epoch, so computing them once
(and keeping them on disk, keyed by the images and the backbone's weights) turns head training
from a 20-images-a-second job into a matter of seconds. Each image is kept twice, as is and
mirrored, the one augmentation that a cached feature can carry.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

import keras

import data
from outputs import atomic_path


def cache_key(paths, backbone, image_size):
    """A digest of the image files (path, size, modification time), the weights and the size."""
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        h.update(json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns]).encode())
    for weight in backbone.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    h.update(str(image_size).encode())
    return h.hexdigest()[:24]


def pooled_features(model, paths, cache_dir, batch_size=32, verbose=1):
    """(features, mirrored_features, readable) for `paths`, from the cache when it has them.

    `model` is the full classifier; its scaling layer and backbone are run (in inference mode)
    and the feature map is averaged to one vector per image. `readable` marks the images that
    decoded.
    """
    backbone = model.get_layer("mobilenetv2")
    image_size = int(model.input_shape[1])
    path = os.path.join(cache_dir, f"features-{cache_key(paths, backbone, image_size)}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            return cached["plain"], cached["mirrored"], cached["readable"]

    # One model, two inputs (the image and its mirror), so each file is decoded once.
    pool = keras.Sequential([model.get_layer("mobilenet_scaling"), backbone,
                             keras.layers.GlobalAveragePooling2D()])
    image = keras.Input((image_size, image_size, 3))
    mirror = keras.Input((image_size, image_size, 3))
    extractor = keras.Model([image, mirror], [pool(image), pool(mirror)])
    reader = data.ImageReader(image_size)
    images = data.make_eval_dataset(paths, reader, batch_size)
    # A 1-tuple: Keras reads a 2-tuple from a dataset as (inputs, labels).
    plain, mirrored = extractor.predict(images.map(lambda x: ((x, tf.reverse(x, axis=[2])),)),
                                        verbose=verbose)
    readable = np.array([p not in reader.skipped for p in paths])
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, plain=plain, mirrored=mirrored, readable=readable)
    return plain, mirrored, readable
