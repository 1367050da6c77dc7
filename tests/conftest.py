"""Shared fixtures: tiny synthetic image folders and one tiny model trained once per test run
(pytest.ini runs the suite on every core with pytest-xdist; the workers share them).

Graph tracing costs 15-20 s per new model, so the suite trains a single small model and every
test that needs one shares it, and in-process tests run TensorFlow functions eagerly (see
below). Graph mode stays covered by the tests that train or predict in a subprocess, which
does not inherit the setting.
"""

import hashlib
import json
import os

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import numpy as np
import pytest
from PIL import Image

# The repository root: pytest.ini's `pythonpath = .` puts it on the path, so the tests import
# the facegender package as an installed copy would be imported; child processes run there.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's models are tiny and mostly run eagerly, op by op, where oneDNN's per-op set-up
# costs more than its kernels save: test_stages.py and the float16 export test took about a
# quarter less time without it on two cores. Set before TensorFlow is imported, so the scripts
# the tests start inherit it; the scripts themselves keep TensorFlow's default (oneDNN on).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# OpenVINO's converter sends usage events to Google Analytics unless the user opted out or it
# runs in CI, and it forks the whole process to send each one (23 per conversion, a second or
# two of CPU each time, and a file under ~/intel). The suite is an automated run: CI=true says
# so, here and in every process it starts (Ray's included).
os.environ.setdefault("CI", "true")


def pytest_configure(config):
    # Tracing a tiny MobileNetV2's train or predict step into a graph costs 15-20 s, several
    # times what running a few steps eagerly costs; every new model (and every model reloaded
    # from a file) pays it again. Eager execution computes the same numbers. tf.data pipelines
    # are traced regardless (this switch does not reach them). The pytest-xdist controller runs
    # no test, so it does not import TensorFlow (seconds before any worker starts).
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import tensorflow as tf
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


def pytest_collection_modifyitems(items):
    """The tests marked slow (10-50 s each on two busy cores, most of the suite's time) go first.

    pytest.ini hands tests to the workers one at a time as each becomes free, so the long
    tests spread over the cores at the start and the short ones fill in the gaps at the end;
    in file order one worker could be left with a 40 s test while the others sit idle.
    """
    # Among them, those that do not wait for the shared trained model go first. The sort is
    # stable: file order otherwise.
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 "trained" in item.fixturenames))


def made_once(tmp_path_factory, name, make):
    """make(folder) -> a JSON value, run once per test run rather than once per worker.

    Under pytest-xdist the first worker to ask makes `name` in the run's shared temporary
    folder while the others wait on a file lock, then all read back what it returned. Where
    there is no fcntl (Windows), or no xdist, each process makes its own.
    """
    shared = os.environ.get("PYTEST_XDIST_WORKER") and fcntl is not None
    if not shared:
        return make(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent
    folder, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)  # a worker that failed may have left it
            value = make(folder)
            done.write_text(json.dumps(value))
        return json.loads(done.read_text())


@pytest.fixture(autouse=True)
def own_working_folder(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own: a script's default output (predict.py's
    predictions.csv; train_model.py's model_balanced.h5, the shipped model's own name, which it
    refuses to replace) lands there, never in the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def package_messages_as_a_library_user_hears_them():
    """Each test starts with the package's logger as a program that imports it finds it (no
    handler of its own, records passed up to pytest's): a script run in-process earlier (by a
    test, or by a session fixture such as `trained`) shows its messages from then on
    (core.messages.show_messages), which would otherwise print into this test's capture."""
    import logging
    logger = logging.getLogger("facegender")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield


@pytest.fixture(scope="session", autouse=True)
def converted_model_cache(tmp_path_factory):
    """Models converted for OpenVINO are cached in a temporary folder, not the user's cache
    (one for all workers: a conversion is written under a temporary name and renamed)."""
    old = os.environ.get("FACEGENDER_CACHE")
    os.environ["FACEGENDER_CACHE"] = made_once(tmp_path_factory, "model_cache", str)
    yield os.environ["FACEGENDER_CACHE"]
    if old is None:
        del os.environ["FACEGENDER_CACHE"]
    else:
        os.environ["FACEGENDER_CACHE"] = old


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return made_once(tmp_path_factory, "faces", lambda folder: make_image_folder(str(folder)))


@pytest.fixture(scope="session")
def backbone_weights(tmp_path_factory, image_folder):
    """A MobileNetV2 weights file whose batch-norm statistics come from the synthetic images.

    With random weights and default statistics MobileNetV2 outputs the same value for every
    input, so predictions compared across a save and reload would match vacuously. Setting each
    batch norm's moving statistics from one batch (momentum 0, a forward pass in training mode)
    makes the features depend on the image, as pretrained ones do.
    """
    import keras
    from facegender.data import decoding, listing
    from facegender.model.network import build_backbone

    def make(folder):
        keras.utils.set_random_seed(0)
        backbone = build_backbone(IMAGE_SIZE, "none")
        paths, _ = listing.list_labeled_images(image_folder)
        images = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
        norms = [layer for layer in backbone.layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in norms:
            layer.momentum = 0.0
        backbone(images / 127.5 - 1.0, training=True)
        for layer in norms:
            layer.momentum = 0.999
        path = str(folder / "calibrated.weights.h5")
        backbone.save_weights(path)
        return path

    return made_once(tmp_path_factory, "weights", make)


# Batches of 16: each eager training step over the backbone costs seconds whatever its size, so
# the 18 training images of `image_folder` take two steps an epoch, not three.
# The synthetic images hold no face: the tiny model takes them as given (tests/test_faces.py
# feeds it a face geometry through its sidecar).
TINY_TRAINING = ["--image_size", str(IMAGE_SIZE), "--batch_size", "16", "--learning_rate", "1e-3",
                 "--val_split", "0.25", "--verbose", "0", "--face_geometry", "none"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, image_folder, backbone_weights):
    """Train one tiny model for 1 epoch; returns the output folder and paths.

    Only the head is trained: what the tests of saving, loading, evaluating and exporting need
    is a model whose scores differ between images, and eager Adam steps over the whole backbone
    would cost every test worker several seconds more. The tests of training itself
    (test_train.py, test_stages.py) train the backbone too.
    """
    from facegender.cli import train as train_model

    def make(out):
        model_path = str(out / "model_balanced.h5")
        code = train_model.main(TINY_TRAINING + [
            "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "1",
            "--trainable_layers", "0", "--output", model_path])
        assert code == 0
        return {"dir": str(out), "model": model_path, "data": image_folder,
                "weights": backbone_weights}

    return made_once(tmp_path_factory, "trained", make)
