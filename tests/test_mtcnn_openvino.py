"""MTCNN on OpenVINO (mtcnn_openvino.py, faces.OpenVINOFaceFinder): mtcnn 1.0.0's arithmetic
step by step against the package's own functions, the faces it finds against MTCNN on
TensorFlow, and its cached conversions (read back without TensorFlow, rebuilt when torn)."""

import gc
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from facegender.core import conversions
from facegender.data import decoding
from facegender.faces import finder as faces
from facegender.runtime import conversion
from facegender.faces import mtcnn_openvino
from conftest import ROOT

pytestmark = pytest.mark.skipif(not conversion.openvino_available(), reason="needs OpenVINO")


@pytest.fixture(scope="module")
def portrait():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def finders():
    """Both finders; the OpenVINO one converts its networks into the test run's cache."""
    return faces.FaceFinder(), faces.OpenVINOFaceFinder()


def random_rows(rng, n, images, side):
    """n candidate rows [image, x1, y1, x2, y2, score], some reaching past the image."""
    corner = rng.uniform(-10, side - 5, (n, 2))
    size = rng.uniform(2, side / 2, (n, 1))
    return np.concatenate([rng.integers(0, images, (n, 1)), corner, corner + size,
                           rng.uniform(0, 1, (n, 1))], axis=1)


def test_each_step_does_what_mtcnns_own_function_does():
    import tensorflow as tf
    from mtcnn.utils import bboxes, images as mtcnn_images

    rng = np.random.default_rng(0)
    batch = ((rng.integers(0, 256, (3, 50, 64, 3)) - 127.5) / 128).astype(np.float32)
    # The pyramid's area resize (to about 1e-6) and the candidates' bilinear crops.
    want = mtcnn_images.scale_images(batch, 0.3).numpy()
    got = mtcnn_openvino.resize_area(batch, int(50 * 0.3), int(64 * 0.3))
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    rows = random_rows(rng, 40, 3, 50)
    want = mtcnn_images.extract_patches(batch, rows, (24, 24)).numpy()
    assert np.abs(mtcnn_openvino.crop_and_resize(batch, rows, 24) - want).max() < 1e-5
    # PNet's windows, and the suppression (both overlap rules; sorted first or not).
    reg = rng.normal(0, 0.1, (3, 9, 11, 4)).astype(np.float32)
    prob = rng.uniform(0, 1, (3, 9, 11, 2)).astype(np.float32)
    want = bboxes.generate_bounding_box(tf.constant(reg), tf.constant(prob), 0.6)
    assert np.array_equal(mtcnn_openvino.window_boxes(reg, prob, 0.6), want)
    rows = random_rows(rng, 200, 3, 60)
    for method, sort in (("union", True), ("union", False), ("min", True)):
        want = bboxes.smart_nms_from_bboxes(rows, 0.5, method=method, initial_sort=sort)
        got = mtcnn_openvino.nms(rows, 0.5, method, sort)
        assert 0 < len(got) < len(rows) and np.array_equal(got, want), (method, sort)
    assert np.array_equal(mtcnn_openvino.squared(rows), bboxes.resize_to_square(rows))
    offsets = rng.normal(0, 0.1, (len(rows), 4)).astype(np.float32)
    assert np.array_equal(mtcnn_openvino.regressed(rows, offsets),
                          bboxes.adjust_bboxes(rows, offsets))


@pytest.mark.parametrize("as_crop", [False, True])
def test_it_finds_grace_hoppers_face_where_mtcnn_on_tensorflow_does(portrait, finders, as_crop):
    photo = decoding.open_rgb(portrait, 2000)[0]
    image = faces.detection_view(photo)[0] if as_crop else np.asarray(photo)
    reference, found = (finder.find([image], min_face_size=40)[0] for finder in finders)
    assert len(found) == len(reference) == 1 and found[0].confidence > 0.95
    assert np.abs(found[0].landmarks - reference[0].landmarks).max() <= 1
    assert np.abs(np.subtract(found[0].box, reference[0].box)).max() <= 1
    assert abs(found[0].confidence - reference[0].confidence) < 1e-4
    # A batch finds what each image alone finds; an image smaller than the face has none.
    batch = finders[1].find([image, np.full_like(image, 128), image], min_face_size=40)
    assert [len(f) for f in batch] == [1, 0, 1]
    assert np.array_equal(batch[2][0].landmarks, found[0].landmarks)
    assert finders[1].find([image[:30, :30].copy()], min_face_size=40) == [[]]


def test_threads_finding_at_once_find_what_one_finds(portrait, finders):
    import concurrent.futures
    view = faces.detection_view(decoding.open_rgb(portrait, 2000)[0])[0]
    batch = [view, np.full_like(view, 128), view[:, ::-1].copy()] * 4

    def found(_):
        return [[face.to_list() for face in row] for row in finders[1].find(batch, 40)]

    want = found(None)
    assert [len(row) for row in want[:3]] == [1, 0, 1]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert list(pool.map(found, range(6))) == [want] * 6


NO_TENSORFLOW = """
import json, sys
import numpy as np
from facegender.data import decoding
from facegender.faces import finder as faces
photo = decoding.open_rgb(sys.argv[1], 2000)[0]
found = faces.face_finder().find([np.asarray(photo)], min_face_size=40)[0]
print(json.dumps([face.to_list() for face in found]))
"""


def test_a_new_process_reads_the_cached_networks_without_tensorflow(portrait, finders):
    photo = decoding.open_rgb(portrait, 2000)[0]
    want = [face.to_list() for face in finders[1].find([np.asarray(photo)], 40)[0]]
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", NO_TENSORFLOW, portrait],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in
                done.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    assert "openvino" in imported and not {"tensorflow", "keras", "mtcnn"} & imported
    assert json.loads(done.stdout) == want


def test_a_torn_conversion_is_converted_again_and_runs_as_the_cached_one(tmp_path, finders):
    import openvino as ov
    cached = glob.glob(os.path.join(os.environ["FACEGENDER_CACHE"], "openvino", "mtcnn_onet-*"))
    os.makedirs(tmp_path / "openvino")
    for path in cached:
        with open(path, "rb") as src, open(tmp_path / "openvino" / os.path.basename(path),
                                           "wb") as dst:
            dst.write(src.read())
    xml = mtcnn_openvino.cache_entry("onet", str(tmp_path))
    assert os.path.basename(xml) in os.listdir(tmp_path / "openvino")
    with open(xml, "r+") as f:
        f.truncate(len(f.read()) // 2)  # a killed copy, say: no longer a model
    assert conversions.read_cached(xml) is None
    fresh = mtcnn_openvino.network("onet", str(tmp_path))
    assert conversions.read_cached(xml) is not None  # written anew, whole
    # The fresh conversion owns its weights: TensorFlow's copy, let go, changes nothing.
    gc.collect()
    patches = np.random.default_rng(3).uniform(-1, 1, (16, 48, 48, 3)).astype(np.float32)
    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    outputs = [core.compile_model(model, "CPU", f32)(patches)
               for model in (fresh, conversions.read_cached(xml))]
    for k, shape in enumerate([(16, 4), (16, 10), (16, 2)]):
        assert outputs[0][k].shape == shape and np.array_equal(outputs[0][k], outputs[1][k])
