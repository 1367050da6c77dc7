"""The face finder, the canonical crop, the landmark cache, and models fed the faces they were
trained on (faces.py, decoding.ImageReader, test_script.py and predict.py through the sidecar)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from facegender.data import decoding, listing
from facegender.core.common import UsageError
from facegender.faces import finder as faces
from facegender.cli import predict
from facegender.cli import evaluate as test_script

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def dotted_photo(points, size=(300, 240)):
    """A grey photo with a coloured 5x5 dot at each of five points (a stand-in face)."""
    img = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(img)
    for (x, y), colour in zip(points, COLOURS):
        draw.rectangle([x - 2, y - 2, x + 2, y + 2], fill=colour)
    return img


def centre_of(crop, colour):
    ys, xs = np.nonzero(np.all(np.abs(crop.astype(int) - colour) < 60, axis=-1))
    return np.array([xs.mean(), ys.mean()])


def tilted_landmarks(centre=(150, 120), scale=1.6, angle=20):
    """The template's five points, scaled, rotated by `angle` degrees and moved: a tilted face."""
    t = np.radians(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (faces.TEMPLATE_112 - 56) @ rot.T * scale + np.asarray(centre)


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_aligned_crop_puts_each_landmark_where_the_template_says(scale):
    points = tilted_landmarks()
    photo = dotted_photo(points)
    face = faces.Face((100, 70, 100, 110), points, 0.99)
    size = 112
    crop = faces.canonical_crop(photo, face, faces.Geometry("aligned", scale), size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # By hand: the template in a 112 px crop, pulled towards the centre by the scale.
    expected = 56 + (faces.TEMPLATE_112 - 56) / scale
    for colour, where in zip(COLOURS, expected):
        assert np.allclose(centre_of(crop, colour), where, atol=1.5)
    # The eyes come out level, whatever the tilt of the photo.
    left, right = centre_of(crop, COLOURS[0]), centre_of(crop, COLOURS[1])
    assert abs(left[1] - right[1]) < 1.5


def test_box_crop_is_the_square_around_the_box_scaled_and_not_rotated():
    photo = Image.new("RGB", (200, 200), (128, 128, 128))
    ImageDraw.Draw(photo).rectangle([60, 50, 139, 149], fill=(255, 0, 0))  # the 80x100 "face"
    face = faces.Face((60, 50, 80, 100), tilted_landmarks(angle=30), 0.99)
    crop = faces.canonical_crop(photo, face, faces.Geometry("box", 1.25), 125)
    red = np.all(np.abs(crop.astype(int) - (255, 0, 0)) < 60, axis=-1)
    ys, xs = np.nonzero(red)
    # The square is 1.25 x 100 = 125 px, one pixel of the photo to one of the crop.
    assert abs(xs.min() - 22.5) <= 1.5 and abs(xs.max() - 101.5) <= 1.5
    assert abs(ys.min() - 12.5) <= 1.5 and abs(ys.max() - 111.5) <= 1.5


def test_geometry_names_parse_and_bad_ones_are_refused():
    assert faces.parse_geometry("none") is None
    assert faces.parse_geometry("aligned") == faces.Geometry("aligned", 1.0)
    assert faces.parse_geometry("box:1.4") == faces.Geometry("box", 1.4)
    for bad in ("oval", "aligned:x", "box:9"):
        with pytest.raises(UsageError):
            faces.parse_geometry(bad)
    assert faces.geometry_of({}) is None  # an old sidecar: as given
    assert faces.geometry_of({"face_geometry": {"kind": "box", "scale": 1.2}}) == \
        faces.Geometry("box", 1.2)


class FakeFinder:
    """Stands in for MTCNN: one face (or none) per image, at fixed places in the view it is
    shown, and a count of the images it was shown."""

    def __init__(self, landmarks_in_view, empty=()):
        self.landmarks, self.empty, self.shown = landmarks_in_view, set(empty), 0

    def find(self, images, min_face_size=20):
        out = []
        for image in images:
            self.shown += 1
            key = int(image[0, 0, 0])  # the test images differ in their corner pixel
            out.append([] if key in self.empty else
                       [faces.Face((40, 40, 80, 80), self.landmarks, 0.99)])
        return out


def small_images(folder, n=3):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(n):
        img = Image.new("RGB", (80, 80), (10 + 40 * k, 128, 128))
        path = os.path.join(folder, f"{k}.png")
        img.save(path)
        paths.append(path)
    return paths


def test_landmarks_are_cached_by_content_reused_and_found_again_when_a_file_changes(tmp_path):
    paths = small_images(tmp_path / "img")
    view_points = tilted_landmarks((80, 80), 1.0, 0)
    finder = FakeFinder(view_points)
    cache = str(tmp_path / "cache")
    first = faces.find_faces(paths, cache, decoding.open_rgb, 0, finder)
    assert finder.shown == 3
    # Landmarks come back in the image's own pixels (the finder saw it at 160 px, twice as big).
    assert np.allclose(first[0].landmarks, view_points / 2, atol=0.01)  # kept to 0.01 px
    again = faces.find_faces(paths, cache, decoding.open_rgb, 0, finder)
    assert finder.shown == 3 and np.allclose(again[2].landmarks, first[2].landmarks)
    # Same content under another name: the cache has it.
    shutil.copy(paths[0], tmp_path / "copy.png")
    faces.find_faces([str(tmp_path / "copy.png")], cache, decoding.open_rgb, 0, finder)
    assert finder.shown == 3
    # A changed file is a new key: found again, the others not.
    Image.new("RGB", (80, 80), (250, 0, 0)).save(paths[1])
    faces.find_faces(paths, cache, decoding.open_rgb, 0, finder)
    assert finder.shown == 4


def test_faces_are_found_on_the_backend_asked_for(tmp_path, monkeypatch):
    # --backend keras means no OpenVINO, for the face finder as for the classifier.
    asked = []

    def finder_on(cache_dir, backend="auto"):
        asked.append(backend)
        return FakeFinder(tilted_landmarks((80, 80), 1.0, 0))
    monkeypatch.setattr(faces, "face_finder", finder_on)
    paths = small_images(tmp_path / "img", 2)
    geometry = faces.parse_geometry("aligned:1.0")
    found = decoding.main_faces(paths, geometry, str(tmp_path / "cache"), 0, backend="keras")
    assert asked == ["keras"] and all(found[p] is not None for p in paths)
    decoding.main_faces(paths, geometry, str(tmp_path / "cache"), 0, backend="keras")
    assert asked == ["keras"]  # cached: no finder made at all


def test_a_damaged_cache_line_is_detected_and_its_file_found_again(tmp_path):
    paths = small_images(tmp_path / "img", 2)
    finder = FakeFinder(tilted_landmarks((80, 80), 1.0, 0))
    cache = str(tmp_path / "cache")
    faces.find_faces(paths, cache, decoding.open_rgb, 0, finder)
    store = faces.LandmarkCache(cache).path
    lines = open(store).read().splitlines()
    entry = json.loads(lines[0])
    entry["face"][0] += 5  # a changed number: the checksum no longer matches
    with open(store, "w") as f:
        f.write(json.dumps(entry) + "\n" + lines[1][:20])  # and a torn last line
    assert faces.LandmarkCache(cache).damaged == 2
    faces.find_faces(paths, cache, decoding.open_rgb, 0, finder)
    assert finder.shown == 4
    # The damaged lines were dropped when first read: the next run finds nothing wrong.
    assert faces.LandmarkCache(cache).damaged == 0


def test_an_image_without_a_face_is_used_as_given_and_counted(tmp_path):
    paths = small_images(tmp_path / "img")
    finder = FakeFinder(tilted_landmarks((80, 80), 1.0, 0), empty=[50])  # the second image
    found = dict(zip(paths, faces.find_faces(paths, str(tmp_path / "c"), decoding.open_rgb, 0,
                                             finder)))
    geometry = faces.Geometry("aligned", 1.0)
    reader = decoding.ImageReader(32, geometry, found)
    assert decoding.faceless(paths, found) == [paths[1]]
    image, ok = reader(paths[1])
    assert ok and np.array_equal(image, decoding.load_image(paths[1], 32))
    cut, ok = reader(paths[0])
    assert ok and np.array_equal(cut, faces.canonical_crop(Image.open(paths[0]).convert("RGB"),
                                                          found[paths[0]], geometry, 32))


def test_a_training_reader_uses_its_share_of_faces_as_given_and_shares_what_it_skips(
        tmp_path):
    paths = small_images(tmp_path / "img", 2)
    yy, xx = np.mgrid[:80, :80]
    # Not one colour: the crop and the whole image must differ.
    Image.fromarray(np.stack([xx * 3, yy * 3, xx + yy], -1).astype(np.uint8)).save(paths[0])
    finder = FakeFinder(tilted_landmarks((80, 80), 1.0, 0))
    found = dict(zip(paths, faces.find_faces(paths, str(tmp_path / "c"), decoding.open_rgb, 0,
                                             finder)))
    reader = decoding.ImageReader(32, faces.Geometry("aligned", 1.0), found)
    whole, cut = decoding.load_image(paths[0], 32), reader(paths[0])[0]
    assert not np.array_equal(whole, cut)
    training = reader.sometimes_as_given(0.3, seed=1)
    reads = [training(paths[0])[0] for _ in range(400)]
    as_given = sum(np.array_equal(r, whole) for r in reads)
    assert sum(np.array_equal(r, cut) for r in reads) == 400 - as_given
    assert 0.22 < as_given / 400 < 0.38  # about its share, drawn anew at each read
    assert all(np.array_equal(reader(paths[0])[0], cut) for _ in range(20))  # the original
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG")
    assert not training(str(broken))[1] and str(broken) in reader.skipped


# ---------------------------------------------------------------------------
# A model is fed the faces it was trained on

def model_with_geometry(trained, folder, geometry):
    """A copy of the tiny model whose sidecar names `geometry` (None: the old sidecar)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model_balanced.h5")
    shutil.copy(trained["model"], path)
    sidecar = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))
    if geometry is not None:
        sidecar["face_geometry"] = geometry.to_dict()
    json.dump(sidecar, open(os.path.splitext(path)[0] + ".json", "w"))
    return path


def expected_scores(model_path, paths, found, geometry):
    from facegender.model import network as model_lib
    model = model_lib.load_model(model_path)
    size = model_lib.input_size(model)
    images = np.stack([decoding.load_image(p, size, found.get(p), geometry) for p in paths])
    return model.predict(images.astype("float32"), verbose=0)[:, 0]


@pytest.mark.parametrize("geometry", [faces.Geometry("aligned", 1.2), None])
def test_test_script_and_predict_feed_the_sidecars_geometry(trained, tmp_path, monkeypatch,
                                                            geometry):
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("FACEGENDER_CACHE", cache)
    model_path = model_with_geometry(trained, tmp_path / "model", geometry)
    paths, _ = listing.list_labeled_images(trained["data"])
    paths = paths[:4] + paths[-4:]
    folder = tmp_path / "faces"
    for p in paths:
        dest = folder / os.path.basename(os.path.dirname(p)) / os.path.basename(p)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    paths, _ = listing.list_labeled_images(str(folder))
    # Landmarks put in the cache beforehand (a tilted face in each image), so no finder runs.
    points = tilted_landmarks((48, 48), 0.5, 15)
    store = faces.LandmarkCache(cache)
    keys = [faces.content_key(faces.read_file(p)) for p in paths]
    store.add([(key, faces.Face((20, 20, 56, 56), points, 0.99)) for key in keys])
    found = {p: store.entries[key] for p, key in zip(paths, keys)}  # as the cache keeps them
    want = expected_scores(model_path, paths, found, geometry)

    out = tmp_path / "eval"
    assert test_script.main(["--data_path", str(folder), "--model_path", model_path,
                             "--output_dir", str(out), "--no_copy", "--verbose", "0",
                             "--backend", "keras", "--cache_dir", cache]) == 0
    rows = {r["path"]: float(r["p_male"]) for r in csv.DictReader(open(out / "evaluation.csv"))}
    assert np.allclose([rows[p] for p in paths], want, atol=1e-5)
    metrics_json = json.load(open(out / "metrics.json"))
    assert metrics_json["face_geometry"] == (geometry and geometry.to_dict())
    assert metrics_json["images_without_a_face"] == []

    csv_path = tmp_path / "p.csv"
    assert predict.main([str(folder), "--model_path", model_path, "--output", str(csv_path),
                         "--verbose", "0", "--backend", "keras", "--cache_dir", cache]) == 0
    rows = {r["path"]: float(r["p_male"]) for r in csv.DictReader(open(csv_path))}
    assert np.allclose([rows[p] for p in paths], want, atol=1e-5)
    if geometry is not None:  # the cut changes the scores: the test can tell the two apart
        as_given = expected_scores(model_path, paths, {}, None)
        assert not np.allclose(as_given, want, atol=1e-3)


@pytest.fixture(scope="module")
def portrait():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def test_mtcnn_finds_grace_hoppers_face_with_its_landmarks_in_place(portrait):
    photo = decoding.open_rgb(portrait, 2000)[0]
    found = faces.FaceFinder().find([np.asarray(photo)], min_face_size=40)[0]
    assert len(found) == 1 and found[0].confidence > 0.95
    x, y, w, h = found[0].box
    eye_l, eye_r, nose, mouth_l, mouth_r = found[0].landmarks
    assert 150 < w < 400 and eye_l[0] < nose[0] < eye_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1]) < y + h


def test_training_writes_its_geometry_and_counts_the_images_without_a_face(trained, tmp_path,
                                                                         monkeypatch):
    from facegender.cli import train as train_model
    from conftest import TINY_TRAINING

    # The synthetic images hold no face a finder could find: every one is used as given and
    # counted, and the sidecar names the geometry the model is to be fed from now on.
    monkeypatch.setattr(faces, "face_finder", lambda *_: FakeFinder(None, empty=range(256)))
    out = tmp_path / "aligned.h5"
    flags = [f for f in TINY_TRAINING if f not in ("--face_geometry", "none")]
    assert train_model.main(flags + [
        "--data_path", trained["data"], "--init_model", trained["model"], "--epochs", "0",
        "--face_geometry", "aligned:1.1", "--cache_dir", str(tmp_path / "cache"),
        "--output", str(out)]) == 0
    sidecar = json.load(open(tmp_path / "aligned.json"))
    assert sidecar["face_geometry"] == {"finder": "mtcnn", "kind": "aligned", "scale": 1.1}
    n_images = len(listing.list_labeled_images(trained["data"])[0])
    assert sidecar["images_without_a_face"] == n_images
    assert sidecar["config"]["face_geometry"] == "aligned:1.1" and "geometry" not in sidecar["config"]
