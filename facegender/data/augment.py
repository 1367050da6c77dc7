"""Training augmentation: the Keras layers that the `tf.data` training pipeline applies to
batches of raw pixels (float32, 0..255).

`make_augmentation` stacks the reference recipe: `RandomAffine` (rotation, zoom, shear and
shift in one resampling), brightness, the mirror, greyscale, and `RandomDegradation`.

Only FACECOM comes with degraded copies of its photos (`facecom_distorted`: blurred, foggy,
lowlight, noisy, rainy, resized, sunny). Applying the same seven kinds at random to any image
lets every source teach robustness to them. The look and strength of each kind were matched to
`facecom_distorted` by comparing its images with their clean originals
(`bench/degradation_stats.py`): blur and low resolution are mild; fog is a patchy blend of
about half the image with a light grey; low light scales the pixels to about 0.3; noise is
grey, either Gaussian with a standard deviation about 10 (its studio portraits) or
salt-and-pepper on about a tenth of the pixels (nearly all the rest); rain darkens the image by
about 15 and adds short grey streaks; sun glare adds a bright round glow over the face that
saturates at its centre. The ranges below are wider than those measured, so that the model
meets a little more than FACECOM shows. Noise and rain belong to the photo, not to the face
crop cut from it, so they are drawn as coarse as the crop's enlargement of the photo makes them
(`_coarseness`). `python docs/draw_degradations.py FACE.jpg docs/degradations.png` draws one
face under each kind.

`degrade` is a pure function of its seed, so tests can pin it; `RandomDegradation` is the Keras
layer the training pipeline uses, drawing a new seed for every batch.
"""

import numpy as np
import tensorflow as tf

import keras


# ---------------------------------------------------------------------------
# Geometry

def affine_transforms(angle, zoom, shear, dx, dy, height, width):
    """One row of 8 transform parameters per image, as `keras.ops.image.affine_transform` takes.

    Each output pixel p samples the input at c + A (p - c) + (dx, dy), where A rotates by
    `angle` (radians), shears by `shear` along x and scales by `zoom` about the centre c.
    Arguments are tensors of one value per image (height and width are scalars).
    """
    cos, sin = tf.cos(angle), tf.sin(angle)
    a00, a01 = zoom * cos, zoom * (cos * shear - sin)
    a10, a11 = zoom * sin, zoom * (sin * shear + cos)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, cx - a00 * cx - a01 * cy + dx,
                     a10, a11, cy - a10 * cx - a11 * cy + dy, zeros, zeros], axis=1)


class RandomAffine(keras.layers.Layer):
    """Random rotation, zoom, horizontal shear and shift, applied as one resampling per image.

    The ranges mean what they mean for Keras' RandomRotation (a fraction of a full turn),
    RandomZoom, RandomShear (x_factor) and RandomTranslation. Those four layers each resample
    the whole image; composing their matrices and resampling once does a quarter of the work
    and blurs the image once instead of four times.
    """

    def __init__(self, rotation=0.0, zoom=0.0, shear=0.0, shift=0.0, fill_mode="nearest",
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        # zoom: a factor f (zoom by up to f either way) or a (lower, upper) range, as
        # RandomZoom takes it; negative zooms in (a tighter crop), positive zooms out.
        zoom = tuple(zoom) if isinstance(zoom, (tuple, list)) else (-zoom, zoom)
        self.rotation, self.zoom, self.shear, self.shift = rotation, zoom, shear, shift
        self.fill_mode = fill_mode
        self.seed = seed

    def call(self, images, training=True):
        if not training:
            return images
        h = tf.cast(tf.shape(images)[1], tf.float32)
        w = tf.cast(tf.shape(images)[2], tf.float32)
        angle, zoom, shear, dx, dy = self.draw(tf.shape(images)[0])
        transforms = affine_transforms(angle, 1.0 + zoom, shear, dx * w, dy * h, h, w)
        return keras.ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                                fill_mode=self.fill_mode)

    def draw(self, n):
        """Angle (radians), zoom, shear and shifts (fractions of the size) for `n` images.

        One random op for all five: separate ops given the same seed would draw the same numbers.
        """
        turn = self.rotation * 2 * np.pi
        low = tf.constant([-turn, self.zoom[0], -self.shear, -self.shift, -self.shift])
        high = tf.constant([turn, self.zoom[1], self.shear, self.shift, self.shift])
        u = tf.random.uniform([5, n], 0.0, 1.0, seed=self.seed)
        return tf.unstack(low[:, None] + u * (high - low)[:, None])

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom,
                "shear": self.shear, "shift": self.shift, "fill_mode": self.fill_mode,
                "seed": self.seed}


# ---------------------------------------------------------------------------
# Weather and camera degradations

KINDS = ("blurred", "foggy", "lowlight", "noisy", "rainy", "resized", "sunny")
# Noise and rain are drawn on a grid up to this much coarser than the crop (`_coarseness`).
MAX_COARSENESS = 2.5
# The share of noisy images given salt-and-pepper rather than Gaussian noise: 240 of the 255
# photos of facecom_distorted/dev's noisy set have it, but Gaussian noise is what the other
# sources' own photos are more likely to carry, so both are drawn often.
SALT_AND_PEPPER = 0.6


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed, low, high)


def _gaussian_blur(images, sigma):
    """Separable Gaussian blur with a fixed `sigma` in pixels (reflect padding)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.constant(np.tile(kernel[:, None, None, None], (1, 1, 3, 1)))
    cols = tf.constant(np.tile(kernel[None, :, None, None], (1, 1, 3, 1)))
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID")


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def _blurred(images, seed, scale):
    # A per-image mix of a light and a stronger blur: one kernel per batch, a strength per image.
    n = tf.shape(images)[0]
    # At least half a pixel: below that a Gaussian kernel is all but the identity.
    light = _gaussian_blur(images, max(0.5, 0.6 * scale))
    strong = _gaussian_blur(images, max(1.0, 1.5 * scale))
    t = _per_image(_uniform(seed, [n], 0.0, 1.0))
    return light + t * (strong - light)


def _foggy(images, seed):
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    s = tf.random.experimental.stateless_split(seed, 3)
    density = _per_image(_uniform(s[0], [n], 0.35, 0.6))
    colour = _per_image(_uniform(s[1], [n], 185.0, 230.0))
    # Fog is patchy: a smooth random field (4x4 cells, upsampled) moves the density by +-0.15.
    patches = tf.image.resize(_uniform(s[2], [n, 4, 4, 1], -0.15, 0.15), [h, w], "bicubic")
    density = tf.clip_by_value(density + patches, 0.1, 0.8)
    return images * (1 - density) + colour * density


def _lowlight(images, seed):
    return images * _per_image(_uniform(seed, [tf.shape(images)[0]], 0.18, 0.45))


def _coarseness(seed):
    """How many crop pixels one pixel of the photo became, drawn once per batch.

    A face crop is cut from the photo and resized, so a face 80 pixels wide in a 224-pixel
    FACECOM portrait is enlarged two times to fill a 160-pixel crop: the photo's pixel noise
    and rain reach the model as blobs and streaks two pixels wide, not one. Drawing them on a
    grid this much coarser and enlarging it does the same to every source.
    """
    return _uniform(seed, [], 1.0, MAX_COARSENESS)


def _enlarged(field_of, seed, h, w):
    """`field_of(size)` (a batch of fields at `size`) drawn at a coarser grid and resized to
    (h, w)."""
    s = tf.random.experimental.stateless_split(seed, 2)
    k = _coarseness(s[0])
    small = tf.maximum(2, tf.cast(tf.math.ceil(tf.cast(tf.stack([h, w]), tf.float32) / k),
                                  tf.int32))
    return tf.image.resize(field_of(small, s[1]), [h, w], "bilinear")


def _noisy(images, seed):
    """Photo noise of one of the two kinds `facecom_distorted` has, chosen per image: grey
    Gaussian noise (its studio portraits, a standard deviation about 10) or salt-and-pepper
    (nearly all the rest: about a tenth of the pixels turned white or black)."""
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    s = tf.random.experimental.stateless_split(seed, 5)
    sigma = _per_image(_uniform(s[0], [n], 5.0, 22.0))

    def noise(size, seed):
        grey_seed, colour_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        grey = tf.random.stateless_normal(tf.concat([[n], size, [1]], 0), grey_seed)
        colour = tf.random.stateless_normal(tf.concat([[n], size, [3]], 0), colour_seed)
        return grey + 0.3 * colour
    gaussian = images + sigma * _enlarged(noise, s[1], h, w)

    density = _per_image(_uniform(s[2], [n], 0.05, 0.15))

    def impulses(size, seed):
        # +1 salt, -1 pepper, 0 the pixel as it was; grey, as in the photos.
        shape = tf.concat([[n], size, [1]], 0)
        hit, white = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        hit = tf.cast(tf.random.stateless_uniform(shape, hit) < density, tf.float32)
        return hit * tf.sign(tf.random.stateless_uniform(shape, white, -1.0, 1.0))
    field = _enlarged(impulses, s[3], h, w)
    salt, pepper = tf.nn.relu(field), tf.nn.relu(-field)
    salt_and_pepper = images * (1 - salt - pepper) + 255.0 * salt
    impulse = _per_image(tf.cast(_uniform(s[4], [n], 0.0, 1.0) < SALT_AND_PEPPER, tf.float32))
    return impulse * salt_and_pepper + (1 - impulse) * gaussian


def _rainy(images, seed, scale):
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    s = tf.random.experimental.stateless_split(seed, 4)
    darken = _per_image(_uniform(s[0], [n], 5.0, 20.0))
    density = _per_image(_uniform(s[1], [n], 0.02, 0.06))
    amplitude = _per_image(_uniform(s[2], [n], 12.0, 30.0))
    # Short slanted streaks: each drop smeared along a line a few pixels long.
    length = max(2, int(round(3 * scale)))
    kernel = np.zeros((length, length), np.float32)
    for i in range(length):
        kernel[i, min(length - 1, i // 2 + length // 4)] = 1.0

    def streaks(size, seed):
        s = tf.random.experimental.stateless_split(seed, 2)
        shape = tf.concat([[n], size, [1]], 0)
        drops = tf.cast(tf.random.stateless_uniform(shape, s[0]) < density, tf.float32)
        drops *= tf.sign(tf.random.stateless_uniform(shape, s[1], -1.0, 0.6))  # more dark
        return tf.nn.conv2d(drops, tf.constant(kernel[:, :, None, None]), 1, "SAME")
    streak = tf.clip_by_value(_enlarged(streaks, s[3], h, w), -1.0, 1.0)
    return images - darken + amplitude * streak


def _resized(images, seed):
    # One reduction factor per batch: resizing takes one output size for all images.
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    factor = _uniform(seed, [], 0.3, 0.7)
    small = tf.maximum(8, tf.cast(tf.cast(tf.stack([h, w]), tf.float32) * factor, tf.int32))
    down = tf.image.resize(images, small, "bilinear", antialias=True)
    return tf.image.resize(down, [h, w], "bilinear")


def _sunny(images, seed):
    n = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    s = tf.random.experimental.stateless_split(seed, 4)
    # The glow sits over the face, which face crops put near the centre.
    cx = _uniform(s[0], [n], 0.35, 0.65) * w
    cy = _uniform(s[1], [n], 0.3, 0.6) * h
    radius = _uniform(s[2], [n], 0.25, 0.45) * h
    strength = _uniform(s[3], [n], 150.0, 255.0)
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    r2 = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2) / radius[:, None,
                                                                                  None] ** 2
    glow = strength[:, None, None] * tf.clip_by_value(1 - r2, 0.0, 1.0) ** 1.5
    return images + glow[..., None]


def degrade(images, kinds, seed):
    """Apply the degradation `KINDS[kinds[i]]` to image i (-1: leave it as it is).

    `images` is a float batch (N, H, W, 3) in 0..255, `kinds` N integers, `seed` two integers
    (a stateless seed: the same seed gives the same output). Strengths are drawn per image, in
    ranges stated in pixels of a 224x224 image and scaled to the batch's size. Returns float32
    in 0..255.
    """
    images = tf.cast(images, tf.float32)
    kinds = tf.cast(kinds, tf.int32)
    scale = float(images.shape[1] or 224) / 224
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(KINDS))
    versions = [_blurred(images, s[0], scale), _foggy(images, s[1]), _lowlight(images, s[2]),
                _noisy(images, s[3]), _rainy(images, s[4], scale), _resized(images, s[5]),
                _sunny(images, s[6])]
    out = images
    for k, version in enumerate(versions):
        out = tf.where(_per_image(tf.cast(kinds == k, tf.float32)) > 0, version, out)
    return tf.clip_by_value(out, 0.0, 255.0)


class RandomDegradation(keras.layers.Layer):
    """Degrade a `rate` share of the images, each with one of `KINDS` drawn at random.

    Active in training only. Each call draws a fresh stateless seed from one random op, so
    batches differ and a seeded pipeline repeats itself.
    """

    def __init__(self, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed

    def call(self, images, training=True):
        if not training or self.rate <= 0:
            return images
        seed = tf.random.uniform([2], 0, 2**31 - 1, tf.int32, seed=self.seed)
        s = tf.random.experimental.stateless_split(seed, 3)
        n = tf.shape(images)[0]
        chosen = tf.random.stateless_uniform([n], s[0], 0, len(KINDS), tf.int32)
        apply = tf.random.stateless_uniform([n], s[1]) < self.rate
        return degrade(images, tf.where(apply, chosen, -1), s[2])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


# ---------------------------------------------------------------------------
# The reference recipe

def make_augmentation(seed=None, degrade=0.0, zoom=(-0.2, 0.2), grayscale=0.0):
    """The reference augmentations as Keras preprocessing layers (active only in training).

    Rotation (20 degrees), zoom, shear and shifts (0.2) are one combined affine resampling;
    brightness (0.2) and the horizontal flip need no resampling. `zoom` is the (lower, upper)
    zoom range: a lower bound below -0.2 crops tighter than any source does, so hair, caps and
    collars cannot stand in for the face. `grayscale` is the share of images turned grey, as
    old photos are. With `degrade`, that share of the images also gets one of the seven
    weather and camera degradations of `facecom_distorted` (`RandomDegradation`). They run in
    the input pipeline rather than inside the model: HDF5 cannot save every one of them, and
    the shipped model should hold only what inference needs.
    """
    # Each layer its own seed: Keras layers given the same seed draw the same numbers, which
    # would tie every flip to a brightness change.
    seeds = [None if seed is None else seed + k for k in range(5)]
    layers = [
        RandomAffine(rotation=20 / 360, zoom=zoom, shear=0.2, shift=0.2, seed=seeds[0]),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seeds[1]),
        keras.layers.RandomFlip("horizontal", seed=seeds[2]),
    ]
    if grayscale > 0:
        layers.append(keras.layers.RandomGrayscale(grayscale, seed=seeds[4]))
    if degrade > 0:
        layers.append(RandomDegradation(degrade, seed=seeds[3]))
    return keras.Sequential(layers, name="augmentation")
