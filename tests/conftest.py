"""Shared fixtures: tiny synthetic image folders and one tiny model trained once per session
(once per worker: pytest.ini runs the suite on every core with pytest-xdist).

Graph tracing costs 15-20 s per new model, so the suite trains a single small model and every
test that needs one shares it, and in-process tests run TensorFlow functions eagerly (see
below). Graph mode stays covered by the tests that train or predict in a subprocess, which
does not inherit the setting.
"""

import hashlib
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Tracing a tiny MobileNetV2's train or predict step into a graph costs 15-20 s, several times
# what running a few steps eagerly costs; every new model (and every model reloaded from a
# file) pays it again. Eager execution computes the same numbers. tf.data pipelines are traced
# regardless (this switch does not reach them).
tf.config.run_functions_eagerly(True)

IMAGE_SIZE = 64  # what the tiny model is trained at


def face_like_image(label, rng, size=96):
    """A synthetic image whose class is learnable: a bright disc, reddish (female) or bluish
    (male)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size * rng.uniform(0.2, 0.3)) ** 2
    img = rng.normal(90, 25, (size, size, 3))
    colour = np.array([200, 90, 60]) if label == 0 else np.array([60, 90, 200])
    img[disc] = colour + rng.normal(0, 15, (disc.sum(), 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_image_folder(root, per_class=12, seed=0, names=("female", "male")):
    """root/<female>/*.jpg and root/<male>/*.png: `per_class` synthetic images each."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            ext = ".jpg" if label == 0 else ".png"
            name = f"img_{i:02d}_{['a', 'b'][i % 2]}{ext}"
            face_like_image(label, rng).save(os.path.join(folder, name))
    return root


def tree_hashes(root):
    """{relative path: sha256} of every file under root, to prove inputs are left untouched."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="session", autouse=True)
def converted_model_cache(tmp_path_factory):
    """Models converted for OpenVINO are cached in a temporary folder, not the user's cache."""
    old = os.environ.get("FACEGENDER_CACHE")
    os.environ["FACEGENDER_CACHE"] = str(tmp_path_factory.mktemp("model_cache"))
    yield os.environ["FACEGENDER_CACHE"]
    if old is None:
        del os.environ["FACEGENDER_CACHE"]
    else:
        os.environ["FACEGENDER_CACHE"] = old


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("faces")))


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory, image_folder):
    """A MobileNetV2 weights file whose batch-norm statistics come from the synthetic images.

    With random weights and default statistics MobileNetV2 outputs the same value for every
    input, so predictions compared across a save and reload would match vacuously. Setting each
    batch norm's moving statistics from one batch (momentum 0, a forward pass in training mode)
    makes the features depend on the image, as pretrained ones do.
    """
    import keras
    import data
    from model import build_backbone

    keras.utils.set_random_seed(0)
    backbone = build_backbone(IMAGE_SIZE, "none")
    paths, _ = data.list_labeled_images(image_folder)
    images = np.stack([data.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    norms = [layer for layer in backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    backbone(images / 127.5 - 1.0, training=True)
    for layer in norms:
        layer.momentum = 0.999
    path = str(tmp_path_factory.mktemp("weights") / "calibrated.weights.h5")
    backbone.save_weights(path)
    return path


# Batches of 16: each eager training step over the backbone costs seconds whatever its size, so
# the 18 training images of `image_folder` take two steps an epoch, not three.
TINY_TRAINING = ["--image_size", str(IMAGE_SIZE), "--batch_size", "16", "--learning_rate", "1e-3",
                 "--val_split", "0.25", "--verbose", "0"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, image_folder, backbone_weights):
    """Train one tiny model for 1 epoch; returns the output folder and paths.

    Only the head is trained: what the tests of saving, loading, evaluating and exporting need
    is a model whose scores differ between images, and eager Adam steps over the whole backbone
    would cost every test worker several seconds more. The tests of training itself
    (test_train.py, test_stages.py) train the backbone too.
    """
    import train_model

    out = tmp_path_factory.mktemp("trained")
    model_path = str(out / "model_balanced.h5")
    code = train_model.main(TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "1",
        "--trainable_layers", "0", "--output", model_path])
    assert code == 0
    return {"dir": str(out), "model": model_path, "data": image_folder,
            "weights": backbone_weights}
