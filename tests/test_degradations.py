import numpy as np
import pytest

import keras

import data
from degradations import KINDS, RandomDegradation, degrade


def face_batch(n=len(KINDS), size=48, seed=0):
    """Smooth images with mid-range values, so every kind of degradation has room to show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = 60 + 120 * np.stack([yy, xx, (yy + xx) / 2], axis=-1)
    return np.clip(base[None] + rng.normal(0, 5, (n, size, size, 3)), 0, 255).astype("float32")


def run(images, kinds, seed):
    return keras.ops.convert_to_numpy(degrade(images, np.asarray(kinds), seed))


def test_each_kind_changes_the_image_keeps_its_shape_and_range():
    images = face_batch()
    out = run(images, np.arange(len(KINDS)), [1, 2])
    assert out.shape == images.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255
    for k, kind in enumerate(KINDS):
        assert np.abs(out[k] - images[k]).mean() > 1.0, f"{kind} left the image as it was"


def test_each_kind_does_what_its_name_says():
    images = face_batch()
    out = dict(zip(KINDS, run(images, np.arange(len(KINDS)), [3, 4])))
    clean = images[0]
    assert out["lowlight"].mean() < 0.5 * clean.mean()
    assert out["foggy"].std() < 0.75 * clean.std()  # fog lowers the contrast
    assert out["sunny"].max() > clean.max() + 40  # a bright glow
    assert out["rainy"].mean() < clean.mean()  # rain darkens
    # Blur and low resolution remove fine detail: neighbouring pixels differ less.
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert detail(out["blurred"]) < 0.8 * detail(clean)
    assert detail(out["resized"]) < 0.8 * detail(clean)
    assert detail(out["noisy"]) > 1.5 * detail(clean)


def test_kind_minus_one_leaves_the_image_alone():
    images = face_batch(3)
    assert np.array_equal(run(images, [-1, -1, -1], [5, 6]), images)


def test_same_seed_same_output_other_seed_other_output():
    images = face_batch()
    kinds = np.arange(len(KINDS))
    first, again = run(images, kinds, [7, 8]), run(images, kinds, [7, 8])
    assert np.array_equal(first, again)
    assert not np.allclose(first, run(images, kinds, [9, 8]))


def test_layer_degrades_about_its_rate_in_training_only():
    images = face_batch(200, size=24)
    layer = RandomDegradation(0.5, seed=1)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    changed = np.abs(out - images).reshape(len(images), -1).max(axis=1) > 0
    assert 0.35 < changed.mean() < 0.65


@pytest.mark.parametrize("rate, layers", [(0.0, 3), (0.5, 4)])
def test_augmentation_includes_degradations_when_asked(rate, layers):
    aug = data.make_augmentation(seed=0, degrade=rate)
    assert len(aug.layers) == layers
    assert len({layer.seed for layer in aug.layers}) == layers
