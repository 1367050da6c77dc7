import numpy as np
import pytest
import tensorflow as tf

import keras

from facegender.data.augment import (KINDS, RandomAffine, RandomDegradation, affine_transforms,
                                     degrade, make_augmentation)


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
    assert (out["noisy"] - images[KINDS.index("noisy")]).std() > 4  # noise added


def test_noise_is_drawn_as_coarse_as_a_face_crop_enlarges_the_photo():
    # Pixel noise of a photo whose face is enlarged k times reaches the crop as blobs k pixels
    # wide: neighbouring pixels of the added noise are correlated, more so the larger k.
    images = face_batch(1, size=96)
    noisy = KINDS.index("noisy")

    def neighbour_correlation(seed):
        noise = (run(images, [noisy], [seed, 1]) - images)[0, 20:-20, 20:-20, 0]
        return np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    correlations = [neighbour_correlation(seed) for seed in range(12)]
    assert min(correlations) > -0.1  # never anti-correlated
    assert max(correlations) > 0.5  # some batches enlarged about two times or more
    assert max(correlations) - min(correlations) > 0.2  # and the enlargement varies


def test_noise_is_gaussian_or_salt_and_pepper_as_in_facecom_distorted():
    # Most of facecom_distorted's noisy photos carry salt-and-pepper: about a tenth of the
    # pixels turned white or black, where Gaussian noise of the same photos moves next to no
    # pixel by more than 60 levels.
    images = face_batch(24, size=64)
    out = run(images, [KINDS.index("noisy")] * 24, [11, 12])
    moved = np.abs(out - images).min(axis=-1) > 60  # in all three channels: grey impulses
    share = moved.reshape(24, -1).mean(axis=1)
    assert (share > 0.03).sum() >= 6  # salt-and-pepper
    assert (share < 0.003).sum() >= 3  # Gaussian noise
    assert share.max() < 0.3


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


@pytest.mark.parametrize("rate, grey, layers", [(0.0, 0.0, 3), (0.5, 0.0, 4), (0.5, 0.1, 5)])
def test_augmentation_adds_degradations_when_asked_each_layer_its_own_seed(rate, grey, layers):
    # Layers given the same seed draw the same numbers: every flip would come with the same
    # brightness change.
    aug = make_augmentation(seed=0, degrade=rate, grayscale=grey)
    assert len(aug.layers) == layers
    assert len({layer.seed for layer in aug.layers}) == layers


def test_augmentation_changes_images_only_in_training():
    aug = make_augmentation(seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(aug(x, training=False), x)
    assert not np.allclose(aug(x, training=True), x)


def _transform(image, angle=0.0, zoom=1.0, shear=0.0, dx=0.0, dy=0.0):
    h, w = image.shape[:2]
    one = lambda v: tf.constant([v], tf.float32)  # noqa: E731
    transforms = affine_transforms(one(angle), one(zoom), one(shear), one(dx), one(dy),
                                   float(h), float(w))
    return keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        image[None].astype("float32"), transforms, interpolation="bilinear",
        fill_mode="nearest"))[0]


def test_affine_transforms_rotate_shift_and_zoom_about_the_centre():
    image = np.arange(5 * 5 * 3, dtype="float32").reshape(5, 5, 3)
    assert np.allclose(_transform(image), image, atol=1e-4)
    # A quarter turn is a rot90 (one way or the other: the augmentation range is symmetric).
    turned = _transform(image, angle=np.pi / 2)
    assert any(np.allclose(turned, np.rot90(image, k, axes=(0, 1)), atol=1e-3) for k in (1, 3))
    # A shift of one pixel: output x samples input x + 1; the edge repeats (fill_mode nearest).
    shifted = _transform(image, dx=1.0)
    assert np.allclose(shifted[:, :4], image[:, 1:], atol=1e-4)
    assert np.allclose(shifted[:, 4], image[:, 4], atol=1e-4)
    # Zoom keeps the centre pixel where it is.
    assert np.allclose(_transform(image, zoom=0.5)[2, 2], image[2, 2], atol=1e-4)


def test_random_affine_is_identity_with_zero_ranges_and_bounded_otherwise():
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    assert np.allclose(RandomAffine()(x, training=True), x, atol=1e-3)
    moved = keras.ops.convert_to_numpy(
        RandomAffine(rotation=0.05, zoom=0.2, shear=0.2, shift=0.2, seed=0)(x))
    assert not np.allclose(moved, x)
    # Bilinear sampling with edge fill never leaves the input's range.
    assert x.min() - 1e-3 <= moved.min() and moved.max() <= x.max() + 1e-3


def test_random_affine_draws_each_parameter_independently():
    # Separate random ops with one seed would draw identical numbers: every rotation would come
    # with the same zoom, shear and shift.
    draws = np.stack(RandomAffine(0.05, 0.2, 0.2, 0.2, seed=3).draw(512))
    correlation = np.corrcoef(draws)
    assert np.all(np.abs(correlation[np.triu_indices(5, 1)]) < 0.2)
    assert np.all(np.abs(draws[0]) <= 0.05 * 2 * np.pi) and np.all(np.abs(draws[1:]) <= 0.2)
