import json
import os

import numpy as np
import pytest
from PIL import Image

from facegender.evaluation import curves, gradcam
from facegender.drawing import plots
from facegender.cli import evaluate as test_script
from facegender.core.common import ModelError
from facegender.runtime import conversion


# ---------------------------------------------------------------------------
# Numbers on hand-made data

def test_operating_point_counts_by_hand():
    y = [0, 0, 0, 1, 1]
    scores = [0.1, 0.6, 0.2, 0.7, 0.4]
    point = curves.operating_point(y, scores, 0.5)
    # At 0.5: one of two males called male (TP 1), one of three females called male (FP 1).
    assert point["tpr"] == point["recall"] == pytest.approx(0.5)
    assert point["fpr"] == pytest.approx(1 / 3)
    assert point["precision"] == pytest.approx(0.5)
    assert curves.operating_point(y, scores, 0.99)["precision"] is None


def test_reliability_bins_and_ece():
    # 0.25 said four times, one male among them: calibrated. 0.95 said twice, both female: off
    # by 0.95.
    y = [1, 0, 0, 0, 0, 0]
    scores = [0.25, 0.25, 0.25, 0.25, 0.95, 0.95]
    bins = curves.reliability_bins(y, scores, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 6
    assert bins[2]["count"] == 4 and bins[2]["fraction_male"] == pytest.approx(0.25)
    assert bins[9]["count"] == 2 and bins[9]["mean_p_male"] == pytest.approx(0.95)
    assert bins[0]["mean_p_male"] is None
    assert curves.expected_calibration_error(y, scores) == pytest.approx(2 / 6 * 0.95)
    # 1.0 falls in the last bin, 0.0 in the first.
    edges = curves.reliability_bins([0, 1], [0.0, 1.0], n_bins=4)
    assert [b["count"] for b in edges] == [1, 0, 0, 1]


def test_most_confident_mistakes_first_and_counts_the_rest():
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.6, 0.1, 0.05, 0.3, 0.8])  # wrong at 0.5: 0 (0.9), 1 (0.6), 3, 4
    shown, left_out = gradcam.most_confident_mistakes(y, scores, 0.5, limit=3)
    assert list(shown) == [3, 0, 4]  # confidence 0.95, 0.9, 0.7; 0.6 is left out
    assert left_out == 1
    shown, left_out = gradcam.most_confident_mistakes(y, scores, 0.5)
    assert len(shown) == 4 and left_out == 0


def test_curve_pngs_have_the_fixed_size_and_one_class_skips_roc(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.clip(y * 0.4 + rng.uniform(0, 0.6, 200), 0, 1)
    results = curves.save_curves(y, scores, 0.5, str(tmp_path))
    assert results["files"] == ["roc_curve.png", "precision_recall_curve.png",
                                "reliability_diagram.png"]
    size = tuple(int(v * plots.CURVE_DPI) for v in plots.CURVE_FIGSIZE)
    for name in results["files"]:
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size == size
    assert 0.5 < results["roc_auc"] <= 1 and 0.5 < results["average_precision"] <= 1
    json.dumps(results)  # plain JSON types only
    # A single class has no ROC: only the reliability diagram is drawn, nothing fails.
    one = curves.save_curves(np.zeros(10, int), np.linspace(0, 1, 10), 0.5,
                                  str(tmp_path / "one"))
    assert one["files"] == ["reliability_diagram.png"] and one["roc_auc"] is None
    assert sorted(os.listdir(tmp_path / "one")) == ["reliability_diagram.png"]


def test_contact_sheet_size_follows_its_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (11, 32, 32, 3), dtype=np.uint8)
    maps = rng.uniform(0, 1, (11, 32, 32))
    fig = plots.contact_sheet_figure(images, [f"img {i}" for i in range(11)], "title", maps)
    plots.save(fig, str(tmp_path / "sheet.png"))
    size = tuple(int(round(v)) for v in fig.get_size_inches() * fig.dpi)
    rows, cols, width, height = plots.sheet_layout(11)
    assert (rows, cols) == (2, 8) and size == (width, height)
    with Image.open(tmp_path / "sheet.png") as img:
        assert img.size == (width, height)


# ---------------------------------------------------------------------------
# Grad-CAM and the sheet on the tiny trained model

@pytest.fixture(scope="module")
def model_and_images(trained):
    from facegender.data import decoding, listing
    from facegender.model import network as model_lib
    model = model_lib.load_model(trained["model"])
    paths, labels = listing.list_labeled_images(trained["data"])
    images = np.stack([decoding.load_image(p, model_lib.input_size(model)) for p in paths])
    return model, paths, labels, images


def test_gradcam_maps_have_the_image_shape_and_vary(model_and_images):
    model, _, _, images = model_and_images
    maps, p_male = gradcam.gradcam(model, images, threshold=0.5, batch_size=10)
    assert maps.shape == images.shape[:3] and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and maps.min() >= 0 and maps.max() <= 1
    # Each map that is not all zero peaks at 1; most maps highlight some pixels over others.
    varying = [m.max() > m.min() for m in maps]
    assert sum(varying) >= len(maps) // 2
    assert all(m.max() == pytest.approx(1) for m, v in zip(maps, varying) if v)
    # The split model (features, then head) gives the whole model's output.
    expected = model.predict(images.astype("float32"), verbose=0)[:, 0]
    np.testing.assert_allclose(p_male, expected, atol=1e-4)


@pytest.mark.skipif(not conversion.openvino_available(), reason="needs OpenVINO")
def test_grad_cam_on_the_openvino_conversion_is_kerass_without_gradients(model_and_images):
    model, _, _, images = model_and_images
    explain = gradcam.OpenVINOGradCam.from_model(conversion.convert(model))
    assert explain is not None and explain.image_size == images.shape[1]
    classes = np.arange(len(images)) % 2  # each class explained, for images of both
    want = gradcam.KerasGradCam(model).maps(images, classes, batch_size=10)
    got = explain.maps(images, classes, batch_size=7)
    assert np.ptp(want) > 0.5  # the comparison is not vacuous
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)


def test_grad_cam_on_openvino_declines_a_head_it_cannot_read():
    import keras
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    other = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    assert gradcam.OpenVINOGradCam.from_model(conversion.convert(other)) is None


def test_gradcam_refuses_a_model_without_backbone_and_head():
    import keras
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    other = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ModelError, match="Grad-CAM needs a model from train_model.py"):
        gradcam.gradcam(other, np.zeros((1, 32, 32, 3)))


def test_misclassified_sheet_shows_the_most_confident_and_says_how_many_left_out(
        model_and_images, tmp_path):
    model, paths, labels, images = model_and_images
    # At threshold 0 every image is called male, so the 12 female ones are mistakes.
    scores = model.predict(images.astype("float32"), verbose=0)[:, 0]
    path = str(tmp_path / "misclassified" / "contact_sheet.png")
    sheet = gradcam.misclassified_sheet(gradcam.KerasGradCam(model), paths, labels,
                                            scores, 0.0, path, limit=5)
    assert (sheet["shown"], sheet["left_out"], sheet["heat_maps"]) == (5, 7, True)
    with Image.open(path) as img:
        assert img.size == plots.sheet_layout(5)[2:]
    assert os.listdir(tmp_path / "misclassified") == ["contact_sheet.png"]  # no temporary left


def test_test_script_saves_curves_numbers_and_contact_sheet(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert test_script.main(["--data_path", trained["data"], "--model_path", trained["model"],
                             "--output_dir", str(out), "--threshold", "0", "--verbose", "0"]) == 0
    size = tuple(int(v * plots.CURVE_DPI) for v in plots.CURVE_FIGSIZE)
    for name in ("roc_curve.png", "precision_recall_curve.png", "reliability_diagram.png"):
        with Image.open(out / name) as img:
            assert img.size == size
    curves = json.load(open(out / "metrics.json"))["curves"]
    assert 0 <= curves["roc_auc"] <= 1 and 0 <= curves["average_precision"] <= 1
    assert 0 <= curves["calibration"]["ece"] <= 1
    assert sum(b["count"] for b in curves["calibration"]["bins"]) == 24
    assert curves["operating_point"]["tpr"] == 1.0 and curves["operating_point"]["fpr"] == 1.0
    with Image.open(out / "misclassified" / "contact_sheet.png") as img:
        assert img.size == plots.sheet_layout(12)[2:]
    assert "contact sheet of the 12 most confident mistakes" in capsys.readouterr().out
