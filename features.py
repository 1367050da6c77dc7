"""Cached backbone features, for training the head and the top blocks in seconds.

A frozen backbone (or frozen lower blocks) maps each image to the same features every epoch, so
computing them once (and keeping them on disk, keyed by the images and the backbone's weights)
turns training what sits above them from a 20-images-a-second job into a matter of seconds or
minutes. Each image is kept twice, as is and mirrored, the one augmentation that a cached
feature can carry.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

import keras

import data
from outputs import atomic_path


def cache_key(paths, backbone, image_size, layer=None):
    """A digest of the image files (path, size, modification time), the weights, the size and
    the layer the features are taken at (None: the pooled output)."""
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        h.update(json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns]).encode())
    for weight in backbone.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    h.update(str(image_size).encode())
    if layer is not None:
        h.update(layer.encode())
    return h.hexdigest()[:24]


def pooled_features(model, paths, cache_dir, batch_size=32, verbose=1):
    """(features, mirrored_features, readable) for `paths`, from the cache when it has them.

    `model` is the full classifier; its scaling layer and backbone are run (in inference mode)
    and the feature map is averaged to one vector per image. `readable` marks the images that
    decoded.
    """
    backbone = model.get_layer("mobilenetv2")
    pool = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D()])
    return _cached(model, pool, None, paths, cache_dir, batch_size, verbose)


def feature_maps(model, layer, paths, cache_dir, batch_size=32, verbose=1):
    """Like `pooled_features`, but the backbone's feature maps at `layer`, kept as float16.

    Everything below `layer` is frozen while the blocks above it are fine-tuned on these maps,
    so each image passes through the costly lower blocks once instead of once per epoch.
    float16 halves the memory and disk the maps take; the blocks above compute in float32.
    """
    backbone = model.get_layer("mobilenetv2")
    bottom = keras.Model(backbone.input, backbone.get_layer(layer).output)
    return _cached(model, bottom, layer, paths, cache_dir, batch_size, verbose, "float16")


def _cached(model, extract, layer, paths, cache_dir, batch_size, verbose, dtype="float32"):
    backbone = model.get_layer("mobilenetv2")
    image_size = int(model.input_shape[1])
    key = cache_key(paths, backbone, image_size, layer)
    path = os.path.join(cache_dir, f"features-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            return cached["plain"], cached["mirrored"], cached["readable"]

    # One model, two inputs (the image and its mirror), so each file is decoded once.
    scaled = keras.Sequential([model.get_layer("mobilenet_scaling"), extract])
    image = keras.Input((image_size, image_size, 3))
    mirror = keras.Input((image_size, image_size, 3))
    extractor = keras.Model([image, mirror], [scaled(image), scaled(mirror)])
    reader = data.ImageReader(image_size)
    images = data.make_eval_dataset(paths, reader, batch_size)
    # A 1-tuple: Keras reads a 2-tuple from a dataset as (inputs, labels).
    plain, mirrored = extractor.predict(images.map(lambda x: ((x, tf.reverse(x, axis=[2])),)),
                                        verbose=verbose)
    plain, mirrored = plain.astype(dtype), mirrored.astype(dtype)
    readable = np.array([p not in reader.skipped for p in paths])
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, plain=plain, mirrored=mirrored, readable=readable)
    return plain, mirrored, readable
