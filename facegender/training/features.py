"""Cached backbone features, for training the head and the top blocks in seconds.

A frozen backbone (or frozen lower blocks) maps each image to the same features every epoch, so
computing them once (and keeping them on disk, keyed by the images and the backbone's weights)
turns training what sits above them from a 20-images-a-second job into a matter of seconds or
minutes. Each image is kept twice, as is and mirrored, the one augmentation that a cached
feature can carry.

Feature maps of 75k images take gigabytes, so they are never held in memory at once: each batch
is written straight into a memory-mapped `.npy` as it comes out of the backbone, and the arrays
handed back are read-only memory maps of the cache. A cache entry is a folder,
`features-<key>/`, built under a temporary name and renamed into place only once complete, so a
run killed midway leaves nothing that a later run would load.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile

import numpy as np

import keras

from facegender.core.common import file_stamp
from facegender.runtime import inference
from facegender.model import network as model_lib

VIEWS_FILE = "views.npy"  # (2, images, *feature shape): as is, then mirrored
READABLE_FILE = "readable.npy"  # one flag per image: False for a file that did not decode


def cache_key(paths, backbone, image_size, layer=None, geometry=None):
    """A digest of the image files (path, size, modification time), the weights, the size,
    the layer the features are taken at (None: the pooled output) and the face geometry the
    images are cut to (None: as given)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(json.dumps(file_stamp(path)).encode())
    for weight in backbone.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    h.update(str(image_size).encode())
    if layer is not None:
        h.update(layer.encode())
    if geometry is not None:
        h.update(json.dumps(geometry.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:24]


def pooled_features(model, paths, cache_dir, batch_size=32, verbose=1, backend="auto",
                    reader=None):
    """(features, mirrored_features, readable) for `paths`, from the cache when it has them.

    `model` is the full classifier; its scaling layer and backbone are run (in inference mode,
    on `backend`, see inference.py) and the feature map is averaged to one vector per image.
    `readable` marks the images that decoded. The features are read-only memory maps.
    `reader` decodes the files (data.face_reader: cut to a face geometry; default: as given).
    """
    return _cached(model, model_lib.FEATURE_MAP_LAYER, POOLED, paths, cache_dir, batch_size,
                   verbose, "float32", backend, reader)


def feature_maps(model, layer, paths, cache_dir, batch_size=32, verbose=1, backend="auto",
                 reader=None):
    """Like `pooled_features`, but the backbone's feature maps at `layer`, kept as float16.

    Everything below `layer` is frozen while the blocks above it are fine-tuned on these maps,
    so each image passes through the costly lower blocks once instead of once per epoch.
    float16 halves the memory and disk the maps take; the blocks above compute in float32.
    """
    return _cached(model, layer, MAPS, paths, cache_dir, batch_size, verbose, "float16", backend,
                   reader)


MAPS, POOLED = 0, 1  # the outputs of `extractor`


def extractor(model, layer):
    """The model's scaling and backbone, as one model of two outputs: the feature maps at
    `layer` and the pooled features. Each cache runs the one output it keeps; both come from
    this one model so that OpenVINO converts it once for both (inference.make_runner)."""
    backbone = model_lib.backbone_of(model)
    both = keras.Model(backbone.input, [backbone.get_layer(layer).output, backbone.output])
    inputs = keras.Input((model_lib.input_size(model),) * 2 + (3,))
    maps, top = both(model_lib.scaling_of(model)(inputs))
    return keras.Model(inputs, [maps, keras.layers.GlobalAveragePooling2D()(top)])


def _cached(model, layer, output, paths, cache_dir, batch_size, verbose, dtype, backend, reader):
    image_size = model_lib.input_size(model)
    backbone = model_lib.backbone_of(model)
    key = cache_key(paths, backbone, image_size, layer if output == MAPS else None,
                    getattr(reader, "geometry", None))
    entry = os.path.join(cache_dir, f"features-{key}")
    cached = load_entry(entry)
    if cached is not None:
        return cached
    os.makedirs(cache_dir, exist_ok=True)
    remove_abandoned(cache_dir)
    both = extractor(model, layer)
    # Named by the weights it runs, so the training and validation passes of both caches,
    # and later runs on the same model, convert it once; kept under the same root.
    weights = cache_key([], backbone, image_size, layer)
    runner = inference.make_runner(both, backend, cache_dir=cache_dir,
                                   key=(f"extractor{layer}", weights), output=output)
    tmp = tempfile.mkdtemp(prefix=f".partial-{os.getpid()}@{socket.gethostname()}@",
                           suffix=f"-features-{key}", dir=cache_dir)
    try:
        write_views(runner, paths, image_size, batch_size, verbose, dtype,
                    tuple(both.outputs[output].shape[1:]), tmp, reader)
        try:
            os.rename(tmp, entry)  # the entry appears whole, or not at all
        except OSError:
            if load_entry(entry) is None:  # not another run that finished the same entry first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_entry(entry)


def write_views(runner, paths, image_size, batch_size, verbose, dtype, shape, folder,
                reader=None):
    """Extract both views of every image into `folder`, batch by batch, through `runner`.

    Each batch goes to the backend together with its mirror image (one call, twice the batch),
    and its outputs go straight into the memory-mapped file: memory holds a few batches, never
    the whole array.
    """
    views = np.lib.format.open_memmap(os.path.join(folder, VIEWS_FILE), mode="w+", dtype=dtype,
                                      shape=(2, len(paths)) + shape)
    readable = np.zeros(len(paths), dtype=bool)
    for start, output, ok in inference.run_paths(runner, paths, image_size, batch_size, verbose,
                                                 prepare=inference.with_mirror,
                                                 reader=reader):
        n = len(ok)
        views[0, start:start + n] = output[:n]
        views[1, start:start + n] = output[n:]
        readable[start:start + n] = ok
    views.flush()
    del views
    np.save(os.path.join(folder, READABLE_FILE), readable)


def load_entry(entry):
    """(plain, mirrored, readable) from a complete cache entry, or None when there is none."""
    if not os.path.isdir(entry):
        return None
    try:
        views = np.load(os.path.join(entry, VIEWS_FILE), mmap_mode="r")
        readable = np.load(os.path.join(entry, READABLE_FILE))
    except (OSError, ValueError):
        shutil.rmtree(entry, ignore_errors=True)  # damaged by hand: build it again
        return None
    return views[0], views[1], readable


def remove_abandoned(cache_dir):
    """Delete partial entries left by killed runs on this machine (their process is gone).

    A process's liveness is read from /proc; where there is none, partial entries are kept.
    """
    host = socket.gethostname()
    if not os.path.isdir("/proc"):
        return
    for item in os.scandir(cache_dir):
        found = re.match(r"\.partial-(\d+)@(.*)@.*-features-", item.name)
        if (found and found.group(2) == host and item.is_dir()
                and not os.path.exists(f"/proc/{found.group(1)}")):
            shutil.rmtree(item.path, ignore_errors=True)
