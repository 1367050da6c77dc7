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

    inputs = keras.Input((image_size, image_size, 3))
    x = model.get_layer("mobilenet_scaling")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x, training=False))
    extractor = keras.Model(inputs, x)
    reader = data.ImageReader(image_size)
    images = data.make_eval_dataset(paths, reader, batch_size)
    both = extractor.predict(images.map(lambda x: tf.concat([x, tf.reverse(x, axis=[2])], 0)),
                             verbose=verbose)
    # Each batch came out as [plain..., mirrored...]; split them back apart.
    plain, mirrored, start = [], [], 0
    for n in (len(b) for b in np.array_split(np.arange(len(paths)),
                                             range(batch_size, len(paths), batch_size))):
        plain.append(both[start:start + n])
        mirrored.append(both[start + n:start + 2 * n])
        start += 2 * n
    plain, mirrored = np.concatenate(plain), np.concatenate(mirrored)
    readable = np.array([p not in reader.skipped for p in paths])
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, plain=plain, mirrored=mirrored, readable=readable)
    return plain, mirrored, readable
