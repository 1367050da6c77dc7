import csv
import os

import numpy as np
import pytest
from PIL import Image

from facegender.drawing import annotate
from facegender.cli import predict
from conftest import face_like_image, tree_hashes
from test_predict import group_photo


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def edge_share(image, x, y, w, h, colour):
    """The share of the box's left, right and bottom edges (one pixel wide, at the CSV's
    coordinates) that has `colour`; the top edge is left out, the label sits on it."""
    ys = np.arange(y, y + h)
    edges = np.concatenate([image[ys, x], image[ys, x + w - 1], image[y + h - 1, x:x + w]])
    return np.mean(np.all(edges == colour, axis=1))


def check_face(image, original, x, y, w, h, p_male, label, threshold):
    share = edge_share(image, x, y, w, h, annotate.CLASS_COLOURS[label])
    if annotate.unsure(p_male, threshold):
        assert 0.3 < share < 0.8  # dashed
    else:
        assert share == 1.0  # solid
    assert edge_share(original, x, y, w, h, annotate.CLASS_COLOURS[label]) == 0
    # The label: light text on the class colour, just above the box (inside it at the top).
    band = image[max(0, y - 40):y + 40, x:x + w]
    fill = np.all(band == annotate.CLASS_COLOURS[label], axis=-1)
    text = np.any(band != original[max(0, y - 40):y + 40, x:x + w], axis=-1) & ~fill
    assert fill.sum() > 100 and text.sum() > 20
    assert band[text].mean() > np.mean(annotate.CLASS_COLOURS[label]) + 30


def test_draw_faces_boxes_sure_faces_solid_and_unsure_ones_dashed():
    photo = Image.new("RGB", (200, 120), (90, 90, 90))
    faces = [(20, 30, 60, 60, 0.90, "male"), (110, 30, 60, 60, 0.55, "female")]
    drawn = np.asarray(annotate.draw_faces(photo, faces, threshold=0.5)).astype(int)
    assert edge_share(drawn, 20, 30, 60, 60, annotate.CLASS_COLOURS["male"]) == 1.0
    assert 0.3 < edge_share(drawn, 110, 30, 60, 60, annotate.CLASS_COLOURS["female"]) < 0.8
    assert np.asarray(photo).max() == 90  # the photo given is not drawn on
    assert annotate.caption("female", 0.55, 0.5) == "female 0.550 ?"
    assert annotate.caption("male", 0.90, 0.5) == "male 0.900"


def test_a_video_face_s_caption_starts_with_its_track_number():
    """The label band of a face given a track number ('#12') is wider than the same face's
    without one, by about the width of the number, and starts at the box as before."""
    photo = Image.new("RGB", (300, 160), (90, 90, 90))
    colour = annotate.CLASS_COLOURS["male"]

    def band_width(face):
        drawn = np.asarray(annotate.draw_faces(photo, [face], threshold=0.5)).astype(int)
        band = np.all(drawn[10:39] == colour, axis=-1)  # the rows above the box at y=40
        columns = np.flatnonzero(band.any(axis=0))
        return columns.min(), columns.max()

    plain = band_width((20, 40, 80, 80, 0.9, "male"))
    numbered = band_width((20, 40, 80, 80, 0.9, "male", "#12"))
    assert plain[0] == numbered[0] == 20
    assert numbered[1] - plain[1] > 15


def test_copy_names_keep_photos_of_the_same_name_apart_and_never_name_an_input(tmp_path):
    a, b = str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg")
    out = str(tmp_path / "out")
    names = annotate.copy_names([a, b], out)
    assert names == {a: os.path.join(out, "a", "x.jpg"), b: os.path.join(out, "b", "x.jpg")}
    # A photo inside the output folder, and a file Pillow cannot write as it is named.
    inside, odd = os.path.join(out, "x.jpg"), str(tmp_path / "out" / "y.tiff")
    names = annotate.copy_names([inside, odd], out, avoid=[os.path.join(out, "y.tiff.png")])
    assert names == {inside: os.path.join(out, "x_1.jpg"), odd: os.path.join(out, "y.tiff_1.png")}


def test_annotate_boxes_every_detected_face_at_its_csv_position(trained, tmp_path, capsys):
    # Two folders holding a photo of the same name: neither copy overwrites the other.
    for folder, count in (("one", 2), ("two", 1)):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        group_photo(tmp_path / "photos" / folder / "group.png", count)
    Image.new("RGB", (200, 160), (120, 140, 160)).save(tmp_path / "photos" / "wall.png")
    before = tree_hashes(str(tmp_path / "photos"))
    out, csv_path = tmp_path / "annotated", tmp_path / "faces.csv"
    assert predict.main([str(tmp_path / "photos"), "--model_path", trained["model"],
                         "--output", str(csv_path), "--detect_faces", "--annotate", str(out),
                         "--verbose", "0"]) == 0
    assert tree_hashes(str(tmp_path / "photos")) == before
    rows = read_rows(csv_path)
    # The wall keeps its row (face_found false), and gets no box.
    assert [r["path"] for r in rows if r["face_found"] == "false"] == [
        str(tmp_path / "photos" / "wall.png")]
    rows = [r for r in rows if r["face_found"] == "true"]
    assert len(rows) == 3
    for row in rows:
        rel = os.path.relpath(row["path"], tmp_path / "photos")
        image, original = pixels(out / rel), pixels(row["path"])
        assert image.shape == original.shape
        check_face(image, original, *(int(row[k]) for k in "xywh"), float(row["p_male"]),
                   row["label"], float(row["threshold"]))
    assert sorted(os.listdir(out)) == ["contact_sheet.jpg", "one", "two", "wall.png"]
    np.testing.assert_array_equal(pixels(out / "wall.png"),  # no face: copied as it is
                                  pixels(tmp_path / "photos" / "wall.png"))
    # The contact sheet: one tile per face, in a row, each a face crop over its caption.
    sheet = pixels(out / "contact_sheet.jpg")
    assert sheet.shape[1] == 3 * annotate.SHEET_TILE and sheet.shape[0] > annotate.SHEET_TILE
    for k in range(3):
        tile = sheet[:annotate.SHEET_TILE, k * annotate.SHEET_TILE:(k + 1) * annotate.SHEET_TILE]
        assert tile.std() > 10  # a photo, not the blank sheet
    assert "annotated 3 photo(s)" in capsys.readouterr().out


def test_without_detect_faces_the_whole_image_is_the_box(trained, tmp_path):
    face_like_image(1, np.random.default_rng(0), size=96).save(tmp_path / "face.png")
    before = tree_hashes(str(tmp_path))
    out = tmp_path.parent / f"{tmp_path.name}_annotated"
    assert predict.main([str(tmp_path / "face.png"), "--model_path", trained["model"],
                         "--output", str(out / "p.csv"), "--annotate", str(out),
                         "--verbose", "0"]) == 0
    assert tree_hashes(str(tmp_path)) == before
    (row,) = read_rows(out / "p.csv")
    check_face(pixels(out / "face.png"), pixels(tmp_path / "face.png"), 0, 0, 96, 96,
               float(row["p_male"]), row["label"], float(row["threshold"]))
    assert pixels(out / "contact_sheet.jpg").shape[1] == annotate.SHEET_TILE


def test_annotate_inside_an_input_folder_is_refused_before_any_work(trained, tmp_path, capsys):
    group_photo(tmp_path / "group.png")
    with pytest.raises(SystemExit) as stop:
        predict.main([str(tmp_path), "--model_path", trained["model"], "--output",
                      str(tmp_path.parent / "p.csv"), "--annotate", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "inside the input folder" in err and not (tmp_path / "out").exists()
