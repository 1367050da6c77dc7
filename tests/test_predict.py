import csv
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from facegender.core.common import ModelError
from facegender.faces import finder as faces
from facegender.labelling import audit, inputs, photo_faces, results
from facegender.labelling.config import LabelConfig
from facegender.cli import predict
from facegender.labelling import label
from conftest import face_like_image, tree_hashes


def run(args):
    return predict.main(args + ["--verbose", "0"])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sidecar_threshold(model_path):
    return json.load(open(os.path.splitext(model_path)[0] + ".json"))["threshold"]


# Two copies of the public-domain portrait that matplotlib's wheel ships, side by side, each
# 200 px wide: a group photo whose faces a real finder must find (cartoons do not fool MTCNN).
GROUP_SIZE = (400, 240)
GROUP_FACE_CENTRES = ((96, 100), (296, 100))


def group_photo(path, count=2):
    """`count` (1 or 2) portraits side by side, from the left."""
    import matplotlib.cbook
    portrait = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg",
                                                           asfileobj=False)).convert("RGB")
    portrait = portrait.resize((200, 200 * portrait.height // portrait.width))
    img = Image.new("RGB", GROUP_SIZE, (120, 140, 160))
    for k in range(count):
        img.paste(portrait.crop((0, 0, 200, 240)), (200 * k, 0))
    img.save(path)
    return str(path)


# ---------------------------------------------------------------------------
# Face crops as given (the default)

def test_predict_folders_and_files_writes_csv_and_skips_unreadable(trained, tmp_path, capsys):
    # An unlabelled folder: no class sub-folders, a nested one, and a file that is not an image.
    loose = tmp_path / "loose"
    (loose / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)
    face_like_image(0, rng).save(loose / "a.jpg")
    face_like_image(1, rng).save(loose / "nested" / "b.png")
    (loose / "broken.jpg").write_bytes(b"not an image")
    single = tmp_path / "single.webp"
    face_like_image(1, rng).save(single)
    before = tree_hashes(str(loose))

    out = tmp_path / "out" / "pred.csv"
    assert run([str(loose), str(single), trained["data"], "--model_path", trained["model"],
                "--output", str(out)]) == 0
    assert tree_hashes(str(loose)) == before
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "p_male", "label", "threshold"]
    paths = [r["path"] for r in rows]
    assert len(rows) == 2 + 1 + 24 and len(set(paths)) == len(paths)
    assert str(loose / "nested" / "b.png") in paths and str(single) in paths
    assert str(loose / "broken.jpg") not in paths
    threshold = sidecar_threshold(trained["model"])
    for r in rows:
        p = float(r["p_male"])
        assert 0 <= p <= 1 and float(r["threshold"]) == pytest.approx(threshold, abs=1e-6)
        assert r["label"] == ("male" if p >= threshold else "female")
    printed = capsys.readouterr()
    assert "27 images:" in printed.out and "skipped 1 unreadable image(s)" in printed.out
    assert "broken.jpg" in printed.err


def test_the_end_of_a_run_returns_what_it_found_and_prints_nothing(tmp_path, capsys):
    # The library writes the CSV and returns the counts, the skipped files and what it wrote;
    # only result_text puts them in words (predict.py prints that).
    a, b, broken = (str(tmp_path / name) for name in ("a.jpg", "b.jpg", "broken.jpg"))
    out = tmp_path / "pred.csv"
    config = LabelConfig(paths=[str(tmp_path)], output=str(out))
    rows = [(a, "0.900000", "male", "0.5"), (b, "0.100000", "female", "0.5")]
    result = results.write_results(config, [a, b, broken], [], rows, {broken: "not an image"},
                                   [], 0.5, "given")
    assert capsys.readouterr() == ("", "")
    assert result.counts == {"female": 1, "male": 1} and result.faces == 2 and result.rows == 2
    assert result.unit == "images" and result.skipped == {broken: "not an image"}
    assert result.csv == str(out) and [r["path"] for r in read_csv(out)] == [a, b]
    assert results.result_text(result).splitlines() == [
        "", "2 images: 1 female, 1 male", "skipped 1 unreadable image(s):",
        f"  {broken}: not an image", f"wrote {out}"]


def test_predict_prints_the_texts_of_the_result_it_returns(trained, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    config = predict.parse_args([trained["data"], "--model_path", trained["model"], "--output",
                                 str(out), "--verbose", "0"])
    result = predict.label_and_print(config)
    printed = capsys.readouterr().out
    assert result.faces == sum(result.counts.values()) == len(read_csv(out)) == 24
    assert result.audit["faces"] == 24 and result.audit["csv"] == str(out)
    assert results.result_text(result) + "\n" in printed
    assert audit.audit_text(result.audit) + "\n" in printed
    assert printed.index(f"wrote {out}\n") < printed.index("== share of women")


def test_predict_matches_the_model_and_threshold_overrides(trained, tmp_path):
    from facegender.data import decoding
    from facegender.model import network as model_lib
    out = tmp_path / "pred.csv"
    assert run([trained["data"], "--model_path", trained["model"], "--output", str(out),
                "--threshold", "0", "--precision", "f32"]) == 0  # the scores Keras gives
    rows = read_csv(out)
    assert {r["label"] for r in rows} == {"male"} and {r["threshold"] for r in rows} == {"0"}
    model = model_lib.load_model(trained["model"])
    image = decoding.load_image(rows[0]["path"], model_lib.input_size(model))
    expected = model.predict(image[None].astype("float32"), verbose=0)[0, 0]
    assert float(rows[0]["p_male"]) == pytest.approx(float(expected), abs=1e-5)
    scores = {float(r["p_male"]) for r in rows}
    assert len(scores) > 1  # the tiny model tells images apart


def test_a_reader_that_stops_reading_is_no_path_error(trained, tmp_path):
    # `predict.py ... | head -1`: once head has its line, the next print meets a closed pipe.
    # That is neither a bad path nor a traceback: exit 1, nothing more said.
    import subprocess
    from conftest import ROOT
    run_ = subprocess.Popen(
        [sys.executable, "predict.py", trained["data"], "--model_path", trained["model"],
         "--output", str(tmp_path / "p.csv"), "--verbose", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_.stdout.readline()
    run_.stdout.close()  # as head does once it has its line
    err = run_.stderr.read()
    assert run_.wait(timeout=300) == 1, err
    assert first.startswith("predicting") and err == "", err


def test_bad_input_exits_2_with_one_line(trained, tmp_path, capsys):
    assert run([str(tmp_path / "nope"), "--model_path", trained["model"]]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert run([str(tmp_path / "empty"), "--model_path", trained["model"]]) == 2
    assert "no images found" in capsys.readouterr().err
    assert run([trained["data"], "--model_path", str(tmp_path / "none.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model file not found" in err and err.count("\n") == 0
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    assert run([str(tmp_path / "bad.jpg"), "--model_path", trained["model"],
                "--output", str(tmp_path / "p.csv")]) == 2
    assert "none of the images could be read" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


# ---------------------------------------------------------------------------
# Faces, and only faces, counted

class BlobFinder:
    """Stands in for MTCNN on the synthetic faces (tests/conftest.py): a saturated disc is a
    face, a grey logo is not."""

    def find(self, images, min_face_size=20):
        import cv2
        out = []
        for image in images:
            image = image.astype(int)
            mask = ((image.max(axis=2) - image.min(axis=2)) > 80).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            x, y, w, h, _ = max(stats[1:n], key=lambda s: s[4], default=(0, 0, 0, 0, 0))
            out.append([faces.Face((float(x), float(y), float(w), float(h)),
                                   np.array([[x + w * u, y + h * v] for u, v in
                                             faces.TEMPLATE_112 / 112]), 0.99)]
                       if min(w, h) >= 10 else [])
        return out


def model_with_geometry(trained, folder):
    """The tiny model with a face geometry in its sidecar: its images are searched for faces."""
    import shutil
    os.makedirs(folder, exist_ok=True)
    model_path = os.path.join(folder, "m.h5")
    shutil.copy(trained["model"], model_path)
    sidecar = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))
    sidecar["face_geometry"] = {"finder": "mtcnn", "kind": "box", "scale": 1.5}
    json.dump(sidecar, open(os.path.join(folder, "m.json"), "w"))
    return model_path


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_a_logo_among_faces_keeps_its_row_and_is_not_counted(trained, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(faces, "face_finder", lambda *a, **k: BlobFinder())
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for k in range(3):
        face_like_image(k % 2, rng).save(photos / f"face_{k}.jpg")
    Image.new("RGB", (120, 80), (210, 210, 210)).save(photos / "logo.png")
    before = tree_hashes(str(photos))
    out = tmp_path / "pred.csv"
    assert run([str(photos), "--model_path", model_with_geometry(trained, tmp_path / "model"),
                "--output", str(out), "--cache_dir", str(tmp_path / "cache")]) == 0
    assert tree_hashes(str(photos)) == before
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "face_found", "p_male", "label", "threshold"]
    assert {r["path"]: r["face_found"] for r in rows} == {
        **{str(photos / f"face_{k}.jpg"): "true" for k in range(3)},
        str(photos / "logo.png"): "false"}
    summary = strict_json(tmp_path / "pred.summary.json")
    assert summary["faces"] == 3 and sum(summary["counts"].values()) == 3
    assert summary["without_a_face"]["paths"] == [str(photos / "logo.png")]
    printed = capsys.readouterr().out
    assert "3 faces:" in printed and "among the 3 faces" in printed
    assert "1 image(s) without a face found: scored whole, not counted" in printed


def test_zero_faces_is_said_in_words_and_the_summary_is_strict_json(trained, tmp_path, capsys):
    for k in range(2):
        Image.new("RGB", (120, 80), (200, 200 - 40 * k, 200)).save(tmp_path / f"logo{k}.png")
    out = tmp_path / "pred.csv"
    args = predict.parse_args([str(tmp_path / "logo0.png"), str(tmp_path / "logo1.png"),
                               "--model_path", trained["model"], "--detect_faces", "--output",
                               str(out), "--verbose", "0"])
    result = label.label(args, detector=FakeDetector([]))
    assert [r["face_found"] for r in read_csv(out)] == ["false", "false"]
    summary = strict_json(tmp_path / "pred.summary.json")  # no NaN anywhere
    assert summary["faces"] == 0 and summary["raw_share"] is None
    assert summary["without_a_face"]["images"] == 2
    assert capsys.readouterr().out == ""  # the library prints nothing; the script prints this:
    printed = audit.audit_text(result.audit)
    assert "no faces found" in printed and "nan" not in printed


def test_a_file_name_that_is_not_utf8_is_scored_and_written(trained, tmp_path, capsys):
    # Latin-1 bytes, as old archives and network shares hold them: not valid UTF-8.
    folder = tmp_path / "archive"
    folder.mkdir()
    rng = np.random.default_rng(4)
    name = os.fsdecode(b"caf\xe9.jpg")
    face_like_image(0, rng).save(os.path.join(folder, name))
    face_like_image(1, rng).save(folder / "plain.jpg")
    (folder / os.fsdecode(b"\xe9t\xe9.jpg")).write_bytes(b"not an image")  # named as skipped
    out = tmp_path / "pred.csv"
    assert run([str(folder), "--model_path", trained["model"], "--output", str(out)]) == 0
    raw = open(out, "rb").read()
    assert os.fsencode(os.path.join(folder, name)) in raw  # the name's own bytes
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert sorted(paths) == sorted([os.path.join(folder, name), str(folder / "plain.jpg")])
    assert all(os.path.exists(p) for p in paths)  # each opens the very file
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable image(s)" in printed and "\\udce9t\\udce9.jpg" in printed


# ---------------------------------------------------------------------------
# --detect_faces

def test_the_finder_is_built_once_and_a_missing_mtcnn_says_what_to_install(
        trained, tmp_path, monkeypatch, capsys):
    assert photo_faces.load_face_detector().mtcnn is photo_faces.load_face_detector().mtcnn
    monkeypatch.setattr(faces.FaceFinder, "_mtcnn", None)
    monkeypatch.setattr(faces.OpenVINOFaceFinder, "_loaded", {})
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # `import mtcnn` now fails
    group_photo(tmp_path / "group.png")
    out = tmp_path / "faces.csv"
    assert run([str(tmp_path / "group.png"), "--model_path", trained["model"], "--output",
                str(out), "--detect_faces"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install mtcnn" in err
    assert not out.exists()


def test_detect_faces_finds_each_face_of_a_group_photo(trained, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    group_photo(photos / "group.png")
    Image.new("RGB", (200, 160), (120, 140, 160)).save(photos / "wall.jpg")
    out = tmp_path / "faces.csv"
    assert run([str(photos), "--model_path", trained["model"], "--output", str(out),
                "--detect_faces"]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "face", "x", "y", "w", "h", "face_found", "p_male",
                             "label", "threshold"]
    # The wall keeps its row: scored whole (its box the whole photo), face_found false.
    wall = [r for r in rows if r["face_found"] == "false"]
    assert [(r["path"], r["face"], r["x"], r["y"], r["w"], r["h"]) for r in wall] == [
        (str(photos / "wall.jpg"), "", "0", "0", "200", "160")]
    rows = [r for r in rows if r["face_found"] == "true"]
    assert [r["face"] for r in rows] == ["0", "1"]
    assert {r["path"] for r in rows} == {str(photos / "group.png")}
    # Each box holds one portrait's face, left to right.
    for r, (cx, cy) in zip(rows, GROUP_FACE_CENTRES):
        x, y, w, h = (int(r[k]) for k in "xywh")
        assert x < cx < x + w and y < cy < y + h and 40 < w < 160
        assert 0 <= float(r["p_male"]) <= 1
    printed = capsys.readouterr().out
    assert "2 faces:" in printed
    assert "1 image(s) without a face found: scored whole, not counted" in printed
    assert "wall.jpg" in printed


class FakeDetector:
    """Stands in for MTCNN: returns fixed boxes (in the coordinates it is shown)."""

    def __init__(self, boxes):
        self.boxes, self.shapes = boxes, []

    def find(self, images, min_face_size=20):
        self.shapes.append((images[0].shape[:2], min_face_size))
        return [[faces.Face(tuple(map(float, b)),
                            np.array([[b[0] + b[2] * u, b[1] + b[3] * v] for u, v in
                                      faces.TEMPLATE_112 / 112]), 0.99) for b in self.boxes]]


def test_rows_per_face_and_boxes_in_original_pixels_with_an_injected_detector(trained, tmp_path):
    # A photo larger than MAX_PHOTO_SIDE is detected on a smaller copy; boxes come back in the
    # original's pixels, and so does --min_face_size.
    big = tmp_path / "big.png"
    Image.new("RGB", (inputs.MAX_PHOTO_SIDE * 2, 400), (90, 90, 90)).save(big)
    # Listed right to left and one hanging over the edge: rows come left to right.
    detector = FakeDetector([[700, 10, 100, 100], [0, 150, 60, 60], [1550, 40, 80, 80]])
    args = predict.parse_args([str(big), "--model_path", trained["model"], "--detect_faces",
                               "--output", str(tmp_path / "f.csv"), "--verbose", "0",
                               "--min_face_size", "80"])
    summary = label.label(args, detector=detector)
    assert detector.shapes == [((200, inputs.MAX_PHOTO_SIDE), 40)]
    rows = read_csv(tmp_path / "f.csv")
    assert summary.rows == len(rows) == 3
    assert [(r["face"], r["x"], r["y"], r["w"], r["h"]) for r in rows] == [
        ("0", "0", "300", "120", "120"), ("1", "1400", "20", "200", "200"),
        ("2", "3100", "80", "160", "160")]


def test_crop_box_is_square_widened_and_inside_the_image():
    assert photo_faces.crop_box((40, 40, 20, 20), 100, 100, margin=0.5) == (30, 30, 70, 70)
    assert photo_faces.crop_box((0, 0, 20, 10), 100, 100, margin=0.2) == (0, 0, 28, 28)
    assert photo_faces.crop_box((90, 40, 10, 10), 100, 100, margin=0.5) == (80, 35, 100, 55)
    assert photo_faces.crop_box((0, 0, 100, 100), 120, 60, margin=0.2) == (20, 0, 80, 60)


def test_faces_are_found_upright_in_an_exif_rotated_photo(tmp_path):
    # Stored on its side with the EXIF tag that says "turn me": detection and boxes use the
    # upright photo, as a viewer shows it.
    group_photo(tmp_path / "group.png")
    with Image.open(tmp_path / "group.png") as img:
        sideways = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    sideways.save(tmp_path / "rotated.jpg", exif=exif, quality=90)
    photo, scale = inputs.load_photo(str(tmp_path / "rotated.jpg"))
    assert photo.size == GROUP_SIZE and scale == 1.0
    found = photo_faces.detect_faces(photo, 40)
    assert len(found) == 2
    for face, (cx, cy) in zip(found, GROUP_FACE_CENTRES):
        x, y, w, h = face.box
        assert x < cx < x + w and y < cy < y + h


def test_a_detector_that_fails_on_a_photo_stops_the_run_with_its_cause(trained, tmp_path,
                                                                      capsys):
    class Broken:
        def find(self, *args, **kwargs):
            raise RuntimeError("finder exploded")

    group_photo(tmp_path / "one.png")
    args = predict.parse_args([str(tmp_path / "one.png"), "--model_path", trained["model"],
                               "--detect_faces", "--output", str(tmp_path / "f.csv"),
                               "--verbose", "0"])
    with pytest.raises(ModelError, match="face detector failed.*finder exploded"):
        label.label(args, detector=Broken())
    assert "unreadable" not in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Nothing lost: outputs never write over inputs; broken sidecars are one line

@pytest.mark.parametrize("target", ["photo", "model", "sidecar", "named_csv"])
def test_an_output_that_would_overwrite_an_input_is_refused_before_any_work(
        trained, tmp_path, capsys, target):
    import shutil
    shutil.copy(trained["model"], tmp_path / "m.h5")
    shutil.copy(os.path.splitext(trained["model"])[0] + ".json", tmp_path / "m.json")
    face_like_image(0, np.random.default_rng(0)).save(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_bytes(Image.open(tmp_path / "a.jpg").tobytes()[:64])
    inputs = [str(tmp_path / "a.jpg"), str(tmp_path / "list.csv")]
    out = {"photo": "a.jpg", "model": "m.h5", "sidecar": "m.json", "named_csv": "list.csv"}
    before = tree_hashes(str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        predict.main(inputs + ["--model_path", str(tmp_path / "m.h5"), "--output",
                               str(tmp_path / out[target]), "--verbose", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--output" in err and out[target] in err
    assert tree_hashes(str(tmp_path)) == before


@pytest.mark.parametrize("key, value", [("threshold", "abc"), ("threshold", None),
                                        ("threshold", float("nan")), ("threshold", 2.0),
                                        ("threshold", [0.5]), ("threshold", True),
                                        ("class_names", ["male", "female"]),
                                        ("input_size", 999)])
def test_a_broken_sidecar_is_one_line_naming_the_file_and_key(trained, tmp_path, capsys, key,
                                                              value):
    import shutil
    model_path = str(tmp_path / "m.h5")
    shutil.copy(trained["model"], model_path)
    sidecar = json.load(open(os.path.splitext(trained["model"])[0] + ".json"))
    sidecar[key] = value
    with open(tmp_path / "m.json", "w") as f:
        json.dump(sidecar, f)  # NaN goes out as JSON's NaN, as a careless writer leaves it
    face_like_image(0, np.random.default_rng(0)).save(tmp_path / "a.jpg")
    before = tree_hashes(str(tmp_path))
    out = tmp_path.parent / f"{tmp_path.name}.csv"
    assert run([str(tmp_path / "a.jpg"), "--model_path", model_path, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "m.json" in err and key in err
    assert not out.exists() and tree_hashes(str(tmp_path)) == before
