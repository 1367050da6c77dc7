"""predict.py on video files (video.py): sampled frames, one row per face with its time,
screen time in the summary, a stopped run continued, an unreadable video named."""

import csv
import json
import os

import numpy as np
import pytest

from facegender.core.messages import show_messages
from facegender.faces import finder as faces
from facegender.cli import predict
from facegender.labelling import inputs, label, video

FPS, SECONDS, SIZE = 10, 4, (160, 120)
# Stand-ins for faces: a reddish square (the tiny model's "female" colour, tests/conftest.py)
# on the left for the first 2 s, a bluish one on the right from 1 s to the end.
RED = dict(rgb=(200, 90, 60), box=(10, 30, 40, 40), frames=range(0, 20))
BLUE = dict(rgb=(60, 90, 200), box=(100, 40, 44, 44), frames=range(10, 40))


def label_as_the_script(config, detector):
    """label.label with a stand-in face finder, its messages and results on the terminal as
    predict.py shows them (conftest puts the package's logger back after the test)."""
    show_messages()
    result = label.label(config, detector=detector)
    predict.print_result(result)
    return result


def write_video(path, fps=FPS, frames=FPS * SECONDS, stand_ins=(RED, BLUE), codec="MJPG"):
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, SIZE)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
        for s in stand_ins:
            if i in s["frames"]:
                x, y, w, h = s["box"]
                frame[y:y + h, x:x + w] = s["rgb"]
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


class BlobDetector:
    """Stands in for MTCNN on the synthetic video: every saturated square is a face."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def find(self, images, min_face_size=20):
        import cv2
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the user stops the run
        image = images[0].astype(int)
        mask = ((image.max(axis=2) - image.min(axis=2)) > 80).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        found = []
        for x, y, w, h, area in stats[1:n]:
            if min(w, h) >= 10:
                landmarks = np.array([[x + w * u, y + h * v]
                                      for u, v in faces.TEMPLATE_112 / 112])
                found.append(faces.Face((float(x), float(y), float(w), float(h)), landmarks,
                                        0.99))
        return [found]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected_times():
    """(time, face index, stand-in) for every face in the frames sampled every 0.5 s."""
    out = []
    for t in np.arange(0, SECONDS, 0.5):
        present = [s for s in (RED, BLUE) if round(t * FPS) in s["frames"]]
        out += [(t, k, s) for k, s in enumerate(present)]
    return out


def args_for(paths, trained, output, *extra):
    return predict.parse_args([*map(str, paths), "--model_path", trained["model"], "--output",
                               str(output), "--every", "0.5", "--verbose", "0", *extra])


def test_a_video_gives_a_row_per_face_with_its_time_and_screen_time(trained, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.avi")
    out = tmp_path / "pred.csv"
    summary = label_as_the_script(args_for([clip], trained, out), BlobDetector())
    # A video is spoken of as a video, in seconds and minutes, never as photos.
    printed = capsys.readouterr().out
    assert "photo" not in printed.lower()
    assert "1 video(s)" in printed and "0.5 seconds" in printed
    # Too few for an interval: "< 20 minutes of video", not "< 20 photos".
    from facegender.labelling import audit
    assert audit.units_of(read_csv(out)) == "minutes of video"
    rows = read_csv(out)
    assert list(rows[0])[:7] == ["path", "time", "face", "x", "y", "w", "h"]
    expected = expected_times()
    assert len(rows) == len(expected) == 10
    for row, (t, k, stand_in) in zip(rows, expected):
        assert row["path"] == clip and float(row["time"]) == pytest.approx(t)
        assert int(row["face"]) == k
        box = [int(row[c]) for c in "xywh"]
        assert np.allclose(box, stand_in["box"], atol=2)  # MJPG blurs an edge by a pixel
    screen = summary.audit["screen_time"]
    labels = [r["label"] for r in rows]
    assert screen["face_seconds"] == {name: 0.5 * labels.count(name)
                                      for name in ("female", "male")}
    assert sum(screen["face_seconds"].values()) == 5.0
    written = json.load(open(tmp_path / "pred.summary.json"))
    assert written["screen_time"]["face_seconds"] == screen["face_seconds"]
    assert not os.path.exists(video.progress_folder(str(out)))  # gone once the CSV is in


def test_a_stopped_video_continues_where_it_was(trained, tmp_path, monkeypatch):
    clip = write_video(tmp_path / "clip.avi")
    label.label(args_for([clip], trained, tmp_path / "whole.csv"), detector=BlobDetector())
    monkeypatch.setattr(video, "CHECKPOINT_FRAMES", 2)
    out = tmp_path / "pred.csv"
    with pytest.raises(KeyboardInterrupt):  # stopped while searching the 6th sampled frame
        label.label(args_for([clip], trained, out), detector=BlobDetector(fail_after=5))
    assert not out.exists() and os.listdir(video.progress_folder(str(out)))
    again = BlobDetector()
    label.label(args_for([clip], trained, out), detector=again)
    assert again.calls == 8 - 4  # frames 0-3 were recorded at the second checkpoint
    resumed, whole = read_csv(out), read_csv(tmp_path / "whole.csv")
    # The same rows; a score may move in its last digit with the batch it was scored in.
    assert [{**r, "p_male": None} for r in resumed] == [{**r, "p_male": None} for r in whole]
    assert [float(r["p_male"]) for r in resumed] == pytest.approx(
        [float(r["p_male"]) for r in whole], abs=1e-5)


def group_clip(clip, photo_path):
    """Two seconds (4 frames at 2 fps) of the test group photo (two real faces), written to
    `clip` (.avi) beside the photo itself at `photo_path`; returns the clip's path."""
    import cv2
    from test_predict import GROUP_SIZE, group_photo
    photo = cv2.imread(group_photo(photo_path))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 2, GROUP_SIZE)
    for _ in range(4):
        writer.write(photo)
    writer.release()
    return str(clip)


def test_the_real_face_finder_on_video_frames(trained, tmp_path, capsys):
    """Two seconds of a still group photo (two real faces): MTCNN finds both in each sampled
    frame."""
    from test_predict import GROUP_FACE_CENTRES
    clip = group_clip(tmp_path / "group.avi", tmp_path / "group.png")
    out = tmp_path / "pred.csv"
    assert predict.main([clip, str(tmp_path / "group.png"), "--model_path", trained["model"],
                         "--output", str(out), "--every", "1", "--verbose", "0",
                         "--detect_faces"]) == 0
    # The summary counts the video as a video, not as a photo.
    assert ("1 of 1 readable photos and 1 of 1 readable videos had a face"
            in capsys.readouterr().out)
    rows = [r for r in read_csv(out) if r["path"] == clip]
    assert [(float(r["time"]), int(r["face"])) for r in rows] == [(0, 0), (0, 1), (1, 0),
                                                                  (1, 1)]
    for r in rows:
        cx, cy = GROUP_FACE_CENTRES[int(r["face"])]
        x, y, w, h = (int(r[c]) for c in "xywh")
        assert x < cx < x + w and y < cy < y + h


def write_mp4(path, frames=FPS * SECONDS):
    """The clip of write_video, as MP4 (its index, the moov atom, is written at the end)."""
    return write_video(path, frames=frames, codec="mp4v")


def test_an_unreadable_video_alone_is_named_and_the_run_ends_with_one_error(trained, tmp_path,
                                                                          capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    code = predict.main([str(bad), "--model_path", trained["model"], "--output",
                         str(tmp_path / "p.csv"), "--verbose", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and str(bad) in err[-1] and "could be read" in err[-1]
    assert any(str(bad) in line and "not a readable video" in line for line in err)
    assert not (tmp_path / "p.csv").exists()


def test_a_truncated_video_beside_whole_ones_is_named_and_skipped_and_the_rest_go_on(
        trained, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    whole = write_mp4(folder / "a_whole.mp4")
    blob = open(whole, "rb").read()
    (folder / "b_cut.mp4").write_bytes(blob[:len(blob) // 2])  # a copy stopped half-way
    later = write_video(folder / "c_later.avi")
    # An AVI cut short opens (its header states the whole length) and reads up to the cut.
    blob = open(later, "rb").read()
    (folder / "d_cut.avi").write_bytes(blob[:len(blob) // 2])
    cut = str(folder / "d_cut.avi")
    out = tmp_path / "pred.csv"
    summary = label_as_the_script(args_for([folder], trained, out), BlobDetector())
    rows = read_csv(out)
    assert {r["path"] for r in rows} == {whole, later, cut}
    assert len([r for r in rows if r["path"] == later]) == len(expected_times())
    assert 0 < len([r for r in rows if r["path"] == cut]) < len(expected_times())
    assert list(summary.skipped) == [str(folder / "b_cut.mp4")]
    printed = capsys.readouterr()
    assert "skipped 1 unreadable file(s)" in printed.out and "b_cut.mp4" in printed.out
    assert "skipping unreadable video" in printed.err
    # The cut is said, once, and nothing of the whole videos.
    said = [line for line in printed.err.splitlines() if "the rest does not decode" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: {cut}: read up to 0:0")


def test_videos_among_photos_are_searched_for_faces_without_extra_flags(trained, tmp_path,
                                                                       capsys):
    from PIL import Image
    from conftest import face_like_image
    folder = tmp_path / "archive"
    folder.mkdir()
    clip = write_video(folder / "clip.avi")
    face_like_image(0, np.random.default_rng(0)).save(folder / "still.jpg")
    Image.new("RGB", (120, 80), (200, 200, 200)).save(folder / "logo.png")  # no face in it
    assert inputs.collect_inputs([str(folder)]) == (
        [str(folder / "logo.png"), str(folder / "still.jpg")], [clip])
    out = tmp_path / "p.csv"
    summary = label_as_the_script(args_for([folder], trained, out), BlobDetector())
    rows = read_csv(out)
    assert "face_found" in rows[0] and "time" in rows[0]
    still = [r for r in rows if r["path"] == str(folder / "still.jpg")]
    assert [r["face_found"] for r in still] == ["true"] and still[0]["time"] == ""
    logo = [r for r in rows if r["path"] == str(folder / "logo.png")]
    assert [(r["face_found"], r["face"], r["w"], r["h"]) for r in logo] == [
        ("false", "", "120", "80")]
    assert len([r for r in rows if r["path"] == clip]) == len(expected_times())
    # The logo is written and named, and not counted among the faces.
    assert summary.audit["faces"] == len(rows) - 1
    assert summary.audit["without_a_face"]["paths"] == [str(folder / "logo.png")]
    assert "every photo is searched for faces too" in capsys.readouterr().out


def test_a_video_s_progress_is_not_resumed_with_another_model_at_the_same_path(tmp_path):
    # A model retrained into the same file (--overwrite) would give other rows: a record of
    # the old one's must not be continued.
    model = tmp_path / "model.h5"
    model.write_bytes(b"first")
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"a video")
    config = predict.parse_args([str(clip), "--model_path", str(model), "--output",
                                 str(tmp_path / "p.csv")])
    before = video.progress_file(config.output, str(clip), config, 0.5)
    assert video.progress_file(config.output, str(clip), config, 0.5) == before
    model.write_bytes(b"second model")
    assert video.progress_file(config.output, str(clip), config, 0.5) != before
