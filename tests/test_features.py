import os

import keras
import numpy as np

import data
import features
import train_model
from conftest import IMAGE_SIZE, TINY_TRAINING


def test_pooled_features_match_the_backbone_and_come_back_from_the_cache(trained, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    paths, _ = data.list_labeled_images(trained["data"])
    paths = paths[:5] + paths[-5:]  # 10 images: batches of 4, 4 and 2
    plain, mirrored, readable = features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert plain.shape == (10, 1280) and mirrored.shape == (10, 1280) and readable.all()

    images = np.stack([data.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    pooled = keras.Sequential([model.get_layer("mobilenet_scaling"),
                               model.get_layer("mobilenetv2"),
                               keras.layers.GlobalAveragePooling2D()])
    np.testing.assert_allclose(plain, pooled(images), atol=1e-4)
    np.testing.assert_allclose(mirrored, pooled(images[:, :, ::-1]), atol=1e-4)
    assert not np.allclose(plain, mirrored, atol=1e-4)

    (cached,) = os.listdir(tmp_path)
    stamp = os.stat(tmp_path / cached).st_mtime_ns
    again = features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert os.stat(tmp_path / cached).st_mtime_ns == stamp and os.listdir(tmp_path) == [cached]
    np.testing.assert_array_equal(again[0], plain)


def test_cache_key_changes_with_the_images_and_the_weights(trained, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    backbone = model.get_layer("mobilenetv2")
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    key = features.cache_key([str(path)], backbone, 64)
    path.write_bytes(b"three")
    assert features.cache_key([str(path)], backbone, 64) != key
    key = features.cache_key([str(path)], backbone, 64)
    assert features.cache_key([str(path)], backbone, 96) != key
    backbone.weights[0].assign(backbone.weights[0] + 1.0)
    assert features.cache_key([str(path)], backbone, 64) != key


def test_head_warm_up_trains_the_head_before_the_fine_tune(image_folder, backbone_weights,
                                                           tmp_path, capsys):
    model_path = str(tmp_path / "warm.h5")
    assert train_model.main(TINY_TRAINING + [
        "--data_path", image_folder, "--weights", backbone_weights, "--epochs", "1",
        "--warmup_epochs", "3", "--cache_dir", str(tmp_path / "cache"), "--trainable_layers", "0",
        "--output", model_path]) == 0
    assert "head warm-up" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "cache")) == 2  # training and validation features


def test_recipe_presets_set_defaults_and_flags_override_them():
    args = train_model.parse_args(["--data_path", "x", "--recipe", "fast"])
    assert (args.warmup_epochs, args.feature_epochs, args.image_size) == (30, 3, 160)
    args = train_model.parse_args(["--data_path", "x", "--recipe", "fast", "--image_size", "224"])
    assert args.image_size == 224 and args.warmup_epochs == 30
    args = train_model.parse_args(["--data_path", "x"])
    assert ((args.warmup_epochs, args.image_size, args.learning_rate, args.epochs)
            == (0, 224, 1e-5, 25))


def test_feature_maps_match_the_lower_blocks_and_come_back_from_the_cache(trained, tmp_path):
    import model as model_lib
    model = keras.models.load_model(trained["model"], compile=False)
    paths, _ = data.list_labeled_images(trained["data"])
    paths = paths[:3] + paths[-3:]
    layer = model_lib.FEATURE_MAP_LAYER
    plain, mirrored, readable = features.feature_maps(model, layer, paths, str(tmp_path), 4, 0)
    backbone = model.get_layer("mobilenetv2")
    bottom = keras.Model(backbone.input, backbone.get_layer(layer).output)
    images = np.stack([data.load_image(p, IMAGE_SIZE) for p in paths]).astype("float32")
    expected = np.asarray(bottom(images / 127.5 - 1.0))
    assert plain.dtype == np.float16 and plain.shape == expected.shape and readable.all()
    # float16 keeps about three significant digits.
    np.testing.assert_allclose(plain, expected, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(mirrored, bottom(images[:, :, ::-1] / 127.5 - 1.0),
                               rtol=2e-3, atol=2e-3)
    # Another layer, or the pooled features, of the same images are cached under another key.
    features.pooled_features(model, paths, str(tmp_path), 4, 0)
    assert len(os.listdir(tmp_path)) == 2
    again = features.feature_maps(model, layer, paths, str(tmp_path), 4, 0)
    np.testing.assert_array_equal(again[0], plain)
    assert len(os.listdir(tmp_path)) == 2
