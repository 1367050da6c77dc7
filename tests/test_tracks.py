"""Face tracks (labelling/tracks.py, labelling/video.py): appearances found across sampled
frames and shot cuts, one label per appearance, the three counts, the timeline and the
annotated frames."""

import csv
import json
import os

import numpy as np
import pytest

from facegender.cli import predict
from facegender.labelling import label
from facegender.labelling import tracks, video
from test_video import BlobDetector

# ---------------------------------------------------------------------------
# labelling/tracks.py on its own


def square_frame(background, squares=(), size=(120, 160)):
    frame = np.full((*size, 3), background, np.uint8)
    for (x, y, w, h), rgb in squares:
        frame[y:y + h, x:x + w] = rgb
    return frame


def test_a_moving_face_is_no_cut_and_another_background_is():
    still = square_frame(60, [((10, 10, 30, 30), (200, 90, 60))])
    moved = square_frame(60, [((60, 40, 30, 30), (200, 90, 60))])
    cut = square_frame(190, [((60, 40, 30, 30), (200, 90, 60))])
    # The same colours on another layout: a cut to the same studio seen from elsewhere.
    halves = np.concatenate([square_frame(60, size=(120, 80)), square_frame(190, size=(120, 80))],
                            axis=1)
    mirrored = halves[:, ::-1]
    signatures = [tracks.picture_signature(f) for f in (still, moved, cut, cut, halves,
                                                         mirrored)]
    assert tracks.picture_changes(signatures[0], signatures[0]) == (0, 0)
    colour, layout = tracks.picture_changes(signatures[0], signatures[1])
    assert colour < tracks.CUT_COLOUR and layout < tracks.CUT_LAYOUT
    assert tracks.picture_changes(signatures[1], signatures[2])[0] > tracks.CUT_COLOUR
    colour, layout = tracks.picture_changes(signatures[4], signatures[5])
    assert colour == 0 and layout > tracks.CUT_LAYOUT
    assert list(tracks.shot_numbers(signatures)) == [0, 0, 1, 1, 2, 3]
    # Continued from an earlier count: the frame before the first is given.
    assert list(tracks.shot_numbers(signatures[2:4], 5, signatures[1])) == [6, 6]


def faces_at(*boxes):
    """(boxes, landmarks): a face's five landmarks at fixed places inside its box."""
    template = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    marks = [np.array([x, y]) + template * np.array([w, h]) for x, y, w, h in boxes]
    return list(boxes), marks


def link(frames, shots=None, gap=1.0):
    """tracks.link on [(time, [box, ...]), ...]."""
    times, boxes, marks, shot = [], [], [], []
    for k, (t, found) in enumerate(frames):
        b, m = faces_at(*found)
        times += [t] * len(b)
        boxes += b
        marks += m
        shot += [shots[k] if shots else 0] * len(b)
    return list(tracks.link(times, boxes, marks, shot, gap))


def test_two_moving_faces_are_two_tracks_through_a_missed_detection():
    left, right = (10, 10, 40, 40), (100, 20, 40, 40)
    frames = [(0.0, [left, right]), (0.5, [(18, 12, 40, 40), (96, 22, 42, 42)]),
              (1.0, [(26, 14, 40, 40)]),  # the right face is missed once
              (1.5, [(34, 16, 40, 40), (88, 26, 42, 42)])]
    assert link(frames) == [0, 1, 0, 1, 0, 0, 1]


def test_a_cut_or_a_long_gap_starts_a_new_track_at_the_same_place():
    box = (40, 20, 40, 40)
    frames = [(0.0, [box]), (0.5, [box]), (1.0, [box]), (1.5, [box])]
    assert link(frames) == [0, 0, 0, 0]
    assert link(frames, shots=[0, 0, 1, 1]) == [0, 0, 1, 1]  # a cut before 1.0 s
    assert link([(0.0, [box]), (2.0, [box])], gap=1.0) == [0, 1]  # gone longer than the gap


def test_a_face_far_away_or_of_another_size_is_another_track():
    assert link([(0.0, [(10, 10, 40, 40)]), (0.5, [(90, 10, 40, 40)])]) == [0, 1]
    assert link([(0.0, [(10, 10, 40, 40)]), (0.5, [(5, 5, 90, 90)])]) == [0, 1]


def test_a_track_label_is_the_mean_log_odds_of_its_faces():
    p = np.array([0.9, 0.9, 0.2, 0.3, 0.05])
    result = tracks.track_scores([0, 0, 0, 1, 1], p, threshold=0.5)
    logit = np.log(p / (1 - p))
    expected = 1 / (1 + np.exp(-np.array([logit[:3].mean(), logit[3:].mean()])))
    assert result["p_male"] == pytest.approx(expected)
    assert list(result["male"]) == [True, False]
    assert list(result["faces"]) == [3, 2]
    assert list(result["disagreeing"]) == [1, 0]  # the 0.2 face of the male track


# ---------------------------------------------------------------------------
# A synthetic video: known people, entries, exits and cuts

FPS, SECONDS, SIZE, EVERY = 10, 12, (240, 160), 0.5
FACE = 48
# Shot backgrounds: plain greys the stand-in detector ignores, far apart in colour.
SHOTS = [(0.0, 50), (6.0, 190)]
# (name, person, label, start s, end s, (x, y) at start, (x, y) at end).
APPEARANCES = [
    ("A", 0, "female", 0.0, 4.0, (10, 20), (50, 30)),
    ("B", 1, "male", 1.5, 6.0, (150, 60), (150, 60)),
    ("B again", 1, "male", 6.0, 9.0, (150, 60), (150, 60)),  # after the cut, same place
    ("C", 2, "female", 6.5, 12.0, (20, 90), (70, 80)),
    ("A again", 0, "female", 10.0, 12.0, (150, 60), (146, 58)),  # where B was, 1.5 s later
]
MISSED = ("C", 9.0)  # a sampled frame in which C's face is not found
TURNED = 4  # every 4th sampled frame of an appearance shows its face turned: colours mixed


def person_crop(person):
    """A face crop (tests/conftest.py's face_like_image: a disc in its class's colour) per
    person, the same in every frame."""
    from conftest import face_like_image
    label = 0 if person != 1 else 1
    return np.asarray(face_like_image(label, np.random.default_rng(person), FACE))


def position(appearance, t):
    _, _, _, t0, t1, (x0, y0), (x1, y1) = appearance
    u = (t - t0) / (t1 - t0)
    return round(x0 + u * (x1 - x0)), round(y0 + u * (y1 - y0))


def present(appearance, frame):
    name, _, _, t0, t1, *_ = appearance
    if (name, round(frame / FPS / EVERY) * EVERY) == MISSED and frame % (FPS * EVERY) == 0:
        return False
    return round(t0 * FPS) <= frame < round(t1 * FPS)


def write_scene(path):
    """The clip (MJPG .avi) of APPEARANCES over SHOTS. On every TURNED-th sampled frame of an
    appearance its disc's colour is mixed 70% towards the other class's, as a face turned from
    the light can read as the other label."""
    import cv2
    crops = {p: person_crop(p) for p in (0, 1, 2)}
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for i in range(FPS * SECONDS):
        t = i / FPS
        grey = [g for start, g in SHOTS if t >= start][-1]
        frame = np.full((SIZE[1], SIZE[0], 3), grey, np.uint8)
        for a in APPEARANCES:
            if not present(a, i):
                continue
            crop = crops[a[1]].copy()
            sample = round((t - a[3]) / EVERY)
            if abs(t - a[3] - sample * EVERY) < 1e-9 and sample % TURNED == TURNED - 1:
                disc = (crop.max(axis=2).astype(int) - crop.min(axis=2)) > 80
                other = (40, 60, 255) if a[2] == "female" else (255, 60, 30)
                crop[disc] = (0.3 * crop[disc] + 0.7 * np.array(other)).astype(np.uint8)
            x, y = position(a, t)
            frame[y:y + FACE, x:x + FACE] = crop
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def appearance_of(row):
    """The appearance whose face is where this row's box is, at its time."""
    t = float(row["time"])
    box = np.array([int(row["x"]), int(row["y"])])
    frame = round(t * FPS)
    near = [(np.abs(box - np.array(position(a, t))).max(), a[0]) for a in APPEARANCES
            if present(a, frame)]
    distance, name = min(near)
    assert distance < FACE / 2, (row, near)
    return name


def args_for(paths, trained, output, *extra):
    return predict.parse_args([*map(str, paths), "--model_path", trained["model"], "--output",
                               str(output), "--every", str(EVERY), "--verbose", "0",
                               "--threshold", "0.5", *extra])


def colour_scores(runner, crops, batch_size=None):
    """Stands in for the model on the stand-in faces: P(male) from how much bluer than red
    the saturated pixels of a crop are (the tiny test model barely tells these discs apart;
    the model is not what these tests are about)."""
    out = []
    for crop in np.asarray(crops, float):
        disc = (crop.max(axis=2) - crop.min(axis=2)) > 60
        blue_minus_red = (crop[disc][:, 2] - crop[disc][:, 0]).mean() / 255 if disc.any() else 0
        out.append(1 / (1 + np.exp(-8 * blue_minus_red)))
    return np.array(out, np.float32)


@pytest.fixture
def scene(tmp_path, monkeypatch):
    from facegender.runtime import inference
    monkeypatch.setattr(inference, "score_images", colour_scores)
    return write_scene(tmp_path / "scene.avi")


def test_every_appearance_is_one_track(trained, scene, tmp_path):
    """No track split inside a shot (C through a missed detection, A and B moving), none
    merged across the cut (B on both sides of it at one place) or a gap (A where B was)."""
    out = tmp_path / "pred.csv"
    label.label(args_for([scene], trained, out), detector=BlobDetector())
    rows = read_csv(out)
    assert list(rows[0])[-1] == "track"
    track_of = {}
    for r in rows:
        track_of.setdefault(appearance_of(r), set()).add(int(r["track"]))
    assert set(track_of) == {a[0] for a in APPEARANCES}
    assert all(len(found) == 1 for found in track_of.values()), track_of  # no split
    assert len({k for found in track_of.values() for k in found}) == len(APPEARANCES)  # no merge
    # Numbered in order of first appearance.
    first = [int(r["track"]) for r in rows]
    assert sorted(set(first), key=first.index) == list(range(len(APPEARANCES)))


def test_track_labels_are_at_least_as_right_as_frame_labels(trained, scene, tmp_path):
    out = tmp_path / "pred.csv"
    summary = label.label(args_for([scene], trained, out), detector=BlobDetector())
    rows = read_csv(out)
    truth = {a[0]: a[2] for a in APPEARANCES}
    frame_right = np.mean([r["label"] == truth[appearance_of(r)] for r in rows])
    table = read_csv(video.track_table_path(str(out)))
    assert len(table) == len(APPEARANCES)
    by_track = {int(r["track"]): appearance_of(r) for r in rows}
    track_right = np.mean([t["label"] == truth[by_track[int(t["track"])]] for t in table])
    assert frame_right < 1  # the turned faces are misread, so the comparison means something
    assert track_right >= frame_right and track_right == 1
    # A track whose faces disagree says so.
    noted = [t for t in table if int(t["disagreeing"])]
    assert noted and all(f"of {t['faces']} faces called" in t["note"] for t in noted)

    # The three counts, overall and for the one video.
    counts = summary.audit["video"]
    for three in (counts["all"], counts["by_video"][0]):
        faces, seconds, appearances = (three[k] for k in ("faces", "screen_seconds", "tracks"))
        assert faces["counts"] == {n: sum(r["label"] == n for r in rows)
                                   for n in ("female", "male")}
        assert appearances["tracks"] == len(APPEARANCES)
        assert appearances["counts"] == {"female": 3, "male": 2}  # A, C, A again; B, B again
        assert sum(seconds["seconds"].values()) == pytest.approx(EVERY * len(rows))
        assert seconds["seconds"] == {n: EVERY * sum(int(t["faces"]) for t in table
                                                     if t["label"] == n)
                                      for n in ("female", "male")}
    written = json.load(open(tmp_path / "pred.summary.json"))
    assert written["video"]["all"]["tracks"]["counts"] == {"female": 3, "male": 2}


def test_a_resumed_video_has_the_same_tracks_across_a_cut(trained, scene, tmp_path,
                                                          monkeypatch):
    """Stopped with the cut (6.0 s, the 13th sampled frame) the first frame after the stop:
    the record keeps the last frame's picture, so the cut is still found."""
    whole = tmp_path / "whole.csv"
    label.label(args_for([scene], trained, whole), detector=BlobDetector())
    monkeypatch.setattr(video, "CHECKPOINT_FRAMES", 3)
    out = tmp_path / "pred.csv"
    with pytest.raises(KeyboardInterrupt):
        label.label(args_for([scene], trained, out), detector=BlobDetector(fail_after=12))
    again = BlobDetector()
    label.label(args_for([scene], trained, out), detector=again)
    assert again.calls == 24 - 12
    assert [(r["time"], r["face"], r["track"]) for r in read_csv(out)] == [
        (r["time"], r["face"], r["track"]) for r in read_csv(whole)]


def test_the_report_has_a_timeline_and_annotate_a_sheet_of_tracks(trained, scene, tmp_path):
    out, page, drawn = tmp_path / "pred.csv", tmp_path / "audit.html", tmp_path / "drawn"
    label.label(args_for([scene], trained, out, "--report", str(page), "--annotate",
                         str(drawn)), detector=BlobDetector())
    html = page.read_text()
    assert "scene.avi: 5 tracks" in html
    assert html.count('class="track"') == len(APPEARANCES)
    table = read_csv(video.track_table_path(str(out)))
    from facegender.drawing import report
    for t in table:  # each row's bar is in its track's colour
        assert f"#{t['track']} {t['label']} " in html
    assert html.count(f"background:{report.colour_of('female')}") == 3
    assert html.count(f"background:{report.colour_of('male')}") == 2
    sheet = drawn / "scene.avi.tracks.jpg"
    from PIL import Image
    assert Image.open(sheet).size[0] == 3 * 480  # frames of 5 tracks, 3 a row
    assert not [p for p in os.listdir(drawn) if p != "scene.avi.tracks.jpg"]
