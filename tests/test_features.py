import os

import keras
import numpy as np
import pytest
from PIL import Image

from facegender.data import decoding, listing
from facegender.training import features
from facegender.model import network as model_lib
from facegender.cli import train as train_model
from conftest import IMAGE_SIZE, TINY_TRAINING


def entries(folder):
    """The feature-cache entries in a cache root (its openvino/ folder holds conversions)."""
    return sorted(n for n in os.listdir(folder) if n.startswith("features-"))


def test_pooled_features_match_the_backbone_and_come_back_from_the_cache(trained, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    paths, _ = listing.list_labeled_images(trained["data"])
    paths = paths[:5] + paths[-5:]  # 10 images: batches of 4, 4 and 2
    plain, mirrored, readable = features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert plain.shape == (10, 1280) and mirrored.shape == (10, 1280) and readable.all()

    images = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    pooled = keras.Sequential([model_lib.scaling_of(model),
                               model_lib.backbone_of(model),
                               keras.layers.GlobalAveragePooling2D()])
    np.testing.assert_allclose(plain, pooled(images), atol=1e-4)
    np.testing.assert_allclose(mirrored, pooled(images[:, :, ::-1]), atol=1e-4)
    assert not np.allclose(plain, mirrored, atol=1e-4)

    (cached,) = entries(tmp_path)
    stamp = os.stat(tmp_path / cached).st_mtime_ns
    again = features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert os.stat(tmp_path / cached).st_mtime_ns == stamp and entries(tmp_path) == [cached]
    np.testing.assert_array_equal(again[0], plain)


def test_cache_key_changes_with_the_images_and_the_weights(trained, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    backbone = model_lib.backbone_of(model)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    key = features.cache_key([str(path)], backbone, 64)
    path.write_bytes(b"three")
    assert features.cache_key([str(path)], backbone, 64) != key
    key = features.cache_key([str(path)], backbone, 64)
    assert features.cache_key([str(path)], backbone, 96) != key
    backbone.weights[0].assign(backbone.weights[0] + 1.0)
    assert features.cache_key([str(path)], backbone, 64) != key


@pytest.mark.slow
def test_head_warm_up_trains_the_head_before_the_fine_tune(image_folder, backbone_weights,
                                                           tmp_path, capsys):
    model_path = str(tmp_path / "warm.h5")
    assert train_model.main(TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "1",
        "--warmup_epochs", "3", "--cache_dir", str(tmp_path / "cache"), "--trainable_layers", "0",
        "--output", model_path]) == 0
    assert "head warm-up" in capsys.readouterr().out
    assert len(entries(tmp_path / "cache")) == 2  # training and validation features


def test_recipe_presets_set_defaults_and_flags_override_them():
    args = train_model.parse_args(["--data_path", "x", "--recipe", "fast"])
    assert (args.warmup_epochs, args.feature_epochs, args.image_size) == (30, 3, 160)
    args = train_model.parse_args(["--data_path", "x", "--recipe", "fast", "--image_size", "224"])
    assert args.image_size == 224 and args.warmup_epochs == 30
    args = train_model.parse_args(["--data_path", "x"])
    assert ((args.warmup_epochs, args.image_size, args.learning_rate, args.epochs)
            == (0, 224, 1e-5, 25))


def test_feature_maps_match_the_lower_blocks_and_come_back_from_the_cache(trained, tmp_path):
    from facegender.model import network as model_lib
    model = keras.models.load_model(trained["model"], compile=False)
    paths, _ = listing.list_labeled_images(trained["data"])
    paths = paths[:3] + paths[-3:]
    layer = model_lib.FEATURE_MAP_LAYER
    plain, mirrored, readable = features.feature_maps(model, layer, paths, str(tmp_path), 4, 0)
    backbone = model_lib.backbone_of(model)
    bottom = keras.Model(backbone.input, backbone.get_layer(layer).output)
    images = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    expected = np.asarray(bottom(images / 127.5 - 1.0))
    assert plain.dtype == np.float16 and plain.shape == expected.shape and readable.all()
    # float16 keeps about three significant digits.
    np.testing.assert_allclose(plain, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(mirrored, bottom(images[:, :, ::-1] / 127.5 - 1.0),
                               rtol=2e-3, atol=2e-3)
    # Another layer, or the pooled features, of the same images are cached under another key.
    features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert len(entries(tmp_path)) == 2
    again = features.feature_maps(model, layer, paths, str(tmp_path), 4, 0)
    np.testing.assert_array_equal(again[0], plain)
    assert len(entries(tmp_path)) == 2


@pytest.mark.slow
def test_the_extractor_is_converted_once_for_both_caches_and_both_passes(
        trained, tmp_path, monkeypatch):
    import openvino as ov

    from facegender.model import network as model_lib
    # The cache root given is the only one used: $FACEGENDER_CACHE is not read.
    monkeypatch.setenv("FACEGENDER_CACHE", str(tmp_path / "elsewhere"))
    model = keras.models.load_model(trained["model"], compile=False)
    paths, _ = listing.list_labeled_images(trained["data"])
    layer = model_lib.FEATURE_MAP_LAYER
    conversions = []
    convert_model = ov.convert_model
    monkeypatch.setattr(ov, "convert_model",
                        lambda *a, **k: conversions.append(1) or convert_model(*a, **k))
    # The fast recipe's order: pooled features (head warm-up), then feature maps.
    pooled = [features.pooled_features(model, p, str(tmp_path), 4, 0, "openvino")
              for p in (paths[:4], paths[4:6])]
    train = features.feature_maps(model, layer, paths[:4], str(tmp_path), 4, 0, "openvino")
    val = features.feature_maps(model, layer, paths[4:6], str(tmp_path), 4, 0, "openvino")
    assert len(conversions) == 1 and len(train[0]) == 4 and len(val[0]) == 2
    maps_shape = tuple(model_lib.backbone_of(model).get_layer(layer).output.shape[1:])
    assert pooled[0][0].shape == (4, 1280) and train[0].shape[1:] == maps_shape
    # Other weights are another model: converted anew, replacing the entry it no longer needs.
    backbone = model_lib.backbone_of(model)
    backbone.set_weights([w * 0.5 for w in backbone.get_weights()])
    features.feature_maps(model, layer, paths[6:8], str(tmp_path), 4, 0, "openvino")
    assert len(conversions) == 2
    assert len(os.listdir(tmp_path / "openvino")) == 2  # one .xml, one .bin
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------
# The streaming cache: bounded memory, and no half-written entry is ever loaded

def tiny_classifier(size=16, channels=32):
    """A stand-in for build_model's structure (scaling, backbone with a named inner layer,
    head), small enough to run thousands of images in seconds."""
    from facegender.model import network as model_lib
    keras.utils.set_random_seed(0)
    inner = keras.Input((size, size, 3))
    maps = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                               name=model_lib.FEATURE_MAP_LAYER)(inner)
    backbone = keras.Model(inner, maps, name=model_lib.BACKBONE_NAME)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=model_lib.SCALING_NAME)(inputs)
    head = keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(1, activation="sigmoid")], name=model_lib.HEAD_NAME)
    return keras.Model(inputs, head(backbone(x)))


def tiny_images(folder, count, size=16):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def expected_maps(model, paths, size=16):
    from facegender.model import network as model_lib
    backbone = model.get_layer(model_lib.BACKBONE_NAME)
    images = np.stack([decoding.load_image(p, size) for p in paths]).astype("float32")
    return (np.asarray(backbone(images / 127.5 - 1.0)),
            np.asarray(backbone(images[:, :, ::-1] / 127.5 - 1.0)))


def test_an_interrupted_extraction_leaves_nothing_that_is_reused(tmp_path, monkeypatch):
    from facegender.runtime import inference
    from facegender.model import network as model_lib
    model = tiny_classifier()
    paths = tiny_images(str(tmp_path / "images"), 40)
    cache = tmp_path / "cache"
    layer = model_lib.FEATURE_MAP_LAYER
    real_map = inference.KerasRunner.map

    def dies_after_two_batches(self, items):
        for n, item in enumerate(real_map(self, items)):
            if n == 2:
                raise KeyboardInterrupt  # as a Ctrl-C midway would
            yield item

    monkeypatch.setattr(inference.KerasRunner, "map", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        features.feature_maps(model, layer, paths, str(cache), 8, 0, backend="keras")
    assert os.listdir(cache) == []  # no entry, and the partial one is cleaned up
    monkeypatch.setattr(inference.KerasRunner, "map", real_map)

    # A run killed outright (no cleanup) leaves a partial folder under a dead process's id, and
    # a damaged entry (its readable flags lost) has the right name: neither is loaded.
    key = features.cache_key(paths, model.get_layer(model_lib.BACKBONE_NAME), 16, layer)
    import socket
    abandoned = cache / f".partial-99999999@{socket.gethostname()}@x-features-{key}"
    abandoned.mkdir()
    np.save(abandoned / features.VIEWS_FILE, np.zeros((2, 40, 16, 16, 32), np.float16))
    damaged = cache / f"features-{key}"
    damaged.mkdir()
    np.save(damaged / features.VIEWS_FILE, np.zeros((2, 40, 16, 16, 32), np.float16))

    plain, mirrored, readable = features.feature_maps(model, layer, paths, str(cache), 8, 0,
                                                      backend="keras")
    assert os.listdir(cache) == [f"features-{key}"]
    want_plain, want_mirrored = expected_maps(model, paths)
    assert np.abs(want_plain).max() > 0.1  # the comparison is not vacuous
    np.testing.assert_allclose(plain, want_plain, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(mirrored, want_mirrored, rtol=2e-3, atol=2e-3)
    assert readable.all()


def test_feature_maps_stream_to_disk_with_bounded_memory(tmp_path):
    import tracemalloc
    from facegender.model import network as model_lib
    model = tiny_classifier()
    paths = tiny_images(str(tmp_path / "images"), 3000)
    full_bytes = 2 * len(paths) * 16 * 16 * 32 * 2  # two views, float16
    tracemalloc.start()
    try:
        plain, mirrored, readable = features.feature_maps(
            model, model_lib.FEATURE_MAP_LAYER, paths, str(tmp_path / "cache"), 64, 0,
            backend="keras")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(plain, np.memmap) and isinstance(mirrored, np.memmap)
    assert not plain.flags.writeable and plain.shape == (3000, 16, 16, 32) and readable.all()
    # Holding the arrays (or the float32 outputs before a cast) would take full_bytes or more.
    assert peak < full_bytes / 5, f"peak {peak / 1e6:.1f} MB for {full_bytes / 1e6:.1f} MB"
    sample = [0, 1234, 2999]
    want_plain, want_mirrored = expected_maps(model, [paths[i] for i in sample])
    np.testing.assert_allclose(plain[sample], want_plain, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(mirrored[sample], want_mirrored, rtol=2e-3, atol=2e-3)


def test_a_truncated_cache_entry_is_rebuilt_not_used(tmp_path):
    # The arrays' headers give their shapes: a file shorter than its header says (a disk
    # that filled, a copy cut short) fails to load and the entry is extracted again.
    from facegender.model import network as model_lib
    model = tiny_classifier()
    paths = tiny_images(str(tmp_path / "images"), 12)
    cache = tmp_path / "cache"
    layer = model_lib.FEATURE_MAP_LAYER
    first = features.feature_maps(model, layer, paths, str(cache), 8, 0, backend="keras")
    want = np.array(first[0])
    entry = next(cache.glob("features-*"))
    views = entry / features.VIEWS_FILE
    blob = views.read_bytes()
    views.write_bytes(blob[:len(blob) - 1000])
    plain, _, readable = features.feature_maps(model, layer, paths, str(cache), 8, 0,
                                               backend="keras")
    np.testing.assert_array_equal(plain, want)
    assert readable.all() and views.stat().st_size == len(blob)
