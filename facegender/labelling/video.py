"""Video files for predict.py: sample a frame every few seconds, find and score its faces, and
keep a progress record so that a stopped run continues where it was.

Frames are read with OpenCV's VideoCapture (its FFmpeg build reads the usual containers and
codecs). A frame is sampled every `every` seconds of the video's own clock (frame index / frame
rate), so the rows' times do not depend on how fast the machine reads. Each sampled frame is a
photo: its faces are found (MTCNN, photo_faces.py), cut to the model's crop and scored, one row
per face with its time. Every CHECKPOINT_FRAMES sampled frames the rows so far and the next
time to sample are written (atomically) to `<output>.progress/`; a rerun of the same command
reads them back and seeks on from there. The folder goes once the CSV is written.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil

import numpy as np

from facegender.core.common import CLASS_NAMES, DataError, ModelError, called_name, file_stamp
from facegender.core.outputs import write_csv, write_json
from facegender.drawing import annotate
from facegender.labelling import csv_rows, inputs, photo_faces
from facegender.labelling import tracks

log = logging.getLogger(__name__)

CHECKPOINT_FRAMES = 50  # sampled frames between progress records: what a stop can lose
# A video read up to more than this share (or two frames) short of its stated length is said
# to be cut short.
TRUNCATION_SLACK = 0.02
SHEET_FRAMES = 24  # frames on a video's --annotate sheet: its tracks' first frames
TIMELINE_TRACKS = 200  # rows of a video's timeline in --report (the longest tracks)
THUMBNAIL = 40  # pixels a track's face is shown at on its timeline


def open_video(path):
    """(cv2.VideoCapture, frames per second, duration in seconds); DataError naming the file
    when OpenCV cannot open it or read a first frame."""
    import cv2
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0
    if not capture.isOpened() or not fps or not np.isfinite(fps) or fps <= 0 \
            or not capture.grab():
        capture.release()
        raise DataError(f"{path}: not a readable video (OpenCV could not open it or read a "
                        "frame); check the file, or convert it to MP4 (H.264)")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return capture, fps, (frames / fps if frames > 0 else float("nan"))


def sampled_frames(path, every, start=0.0):
    """(time in seconds, RGB uint8 frame) for the frames at start, start + every, ...: frame
    round(t * fps) for each t, read in order (frames between are grabbed, not decoded into
    images). Starts by seeking when start > 0."""
    import cv2
    capture, fps, _ = open_video(path)
    try:
        step = 0
        index = 0
        if start > 0:
            first = round(start * fps)
            if capture.set(cv2.CAP_PROP_POS_FRAMES, first) and \
                    int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == first:
                index = first
            else:  # a container that cannot seek: read up to it
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        while True:
            t = start + step * every
            target = round(t * fps)
            while index < target:
                if not capture.grab():
                    return
                index += 1
            ok, frame = capture.read()
            if not ok:
                return
            index += 1
            yield t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            step += 1
    finally:
        capture.release()


# ---------------------------------------------------------------------------
# Progress records

def progress_folder(output):
    return output + ".progress"


def progress_file(output, path, config, threshold):
    """The record of one video in this run: named by what would change its rows (the file,
    its size and time, the sampling, the model file (a retrained one at the same path too),
    the threshold, the face size, --tta)."""
    key = json.dumps([*file_stamp(path), config.every, *file_stamp(config.model_path),
                      threshold, config.min_face_size, bool(config.tta)])
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(progress_folder(output), f"{name}.json")


def read_progress(record):
    """(rows so far, their faces' tracking cells, the next time to sample, the shot count and
    last frame's signature (tracks.py), finished?) from a record; nothing for none."""
    if not os.path.exists(record):
        return [], [], 0.0, 0, None, False
    try:
        with open(record) as f:
            saved = json.load(f)
        signature = saved["signature"]
        return ([tuple(r) for r in saved["rows"]], saved["faces"], float(saved["next_time"]),
                int(saved["shot"]), None if signature is None else np.array(signature),
                saved["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], [], 0.0, 0, None, False  # a damaged record: start that video again


def remove_progress(output):
    shutil.rmtree(progress_folder(output), ignore_errors=True)


# ---------------------------------------------------------------------------
# Predicting

def predict_video(runner, image_size, path, config, threshold, detector, geometry=None,
                  checkpoint_frames=None):
    """Rows (path, time, face, x, y, w, h, P(male), label, threshold[, tta], track) for every
    face in the frames of `path` sampled every config.every seconds, continuing from its
    progress record (`checkpoint_frames` sampled frames apart). The faces are linked into
    tracks (tracks.py) once the whole video is read, from what the record keeps of each face
    (its shot and landmarks), so a resumed run and a Ray actor find the same tracks."""
    from facegender.runtime import inference
    checkpoint_frames = checkpoint_frames or CHECKPOINT_FRAMES
    record = progress_file(config.output, path, config, threshold)
    rows, tracking, start, shot, signature, finished = read_progress(record)
    if finished:
        return with_tracks(rows, tracking, config.every)
    _, fps, duration = open_video(path)  # an unreadable video stops here, naming itself
    if config.verbose and start:
        log.info(f"  {path}: resuming at {clock(start)} ({len(rows)} faces so far)")
    pending, frames = [], 0

    def save(next_time, done):
        if pending:
            scores = inference.score_images(runner, np.stack([c for *_, c in pending]),
                                            config.batch_size)
            rows.extend((path, f"{t:.3f}", k, *box, *csv_rows.score_cells(p, threshold, config))
                        for (t, k, box, _, _, _), p in zip(pending, scores))
            tracking.extend([int(face_shot), *np.round(marks, 2).ravel().tolist()]
                            for (_, _, _, marks, face_shot, _) in pending)
            pending.clear()
        write_json(record, {"video": os.path.abspath(path), "next_time": next_time,
                            "finished": done, "rows": rows, "faces": tracking, "shot": shot,
                            "signature": None if signature is None else signature.tolist()})
        if config.verbose:
            log.info(f"  {path}: {clock(min(next_time, duration))} of {clock(duration)}, "
                     f"{len(rows)} faces")

    next_time = start
    for t, frame in sampled_frames(path, config.every, start):
        from PIL import Image
        now = tracks.picture_signature(frame)
        shot = int(tracks.shot_numbers([now], shot, signature)[0])
        signature = now
        photo = Image.fromarray(frame)
        photo.thumbnail((inputs.MAX_PHOTO_SIDE,) * 2, Image.BILINEAR)
        scale = frame.shape[1] / photo.size[0]
        try:
            faces = photo_faces.found_faces(photo, scale, image_size, config.min_face_size,
                                          detector, geometry)
        except Exception as err:
            raise ModelError(f"the face detector failed on {path} at {t:.3f} s "
                             f"({type(err).__name__}: {err}); check the mtcnn install") from None
        pending += [(t, k, box, marks, shot, crop)
                    for k, (box, crop, marks) in enumerate(faces)]
        frames += 1
        next_time = t + config.every
        if frames % checkpoint_frames == 0:
            save(next_time, False)
    save(next_time, True)
    # A file cut short (a copy stopped half-way) opens, and reads up to its cut: said, since
    # the faces after it are missing from every count. The slack allows for containers whose
    # frame count is an estimate.
    if next_time < duration - max(2 / fps, TRUNCATION_SLACK * duration):
        log.warning(f"warning: {path}: read up to {clock(next_time - config.every)} of the "
                    f"{clock(duration)} its header states; the rest does not decode (cut short "
                    "or damaged?), so its faces are not counted")
    return with_tracks(rows, tracking, config.every)


def with_tracks(rows, tracking, every):
    """The rows of one video with their track appended (tracks.link on each face's time, box,
    landmarks and shot)."""
    if not rows:
        return []
    cells = np.array(tracking, float).reshape(len(rows), 11)
    times = [float(r[1]) for r in rows]
    boxes = [[float(v) for v in r[3:7]] for r in rows]
    found = tracks.link(times, boxes, cells[:, 1:], cells[:, 0].astype(int),
                        tracks.max_gap(every))
    return [(*row, int(k)) for row, k in zip(rows, found)]


# ---------------------------------------------------------------------------
# Tracks: one label per appearance

TRACK_COLUMNS = ["path", "track", "start", "end", "faces", "seconds", "p_male", "label",
                 "disagreeing", "note", "time", "x", "y", "w", "h"]


def track_table(rows, every):
    """One dict per track of the video rows among `rows` (the CSV's rows as csv.DictReader
    gives them), in CSV order: its path and number, first and last time, faces, screen-seconds
    (faces x `every`), P(male) from the mean log-odds of its faces (tracks.track_scores) and
    the label it gives, the faces whose own label is the other one (and a note saying so), and
    the time and box of its largest face (the one to show)."""
    by_video = {}
    for r in rows:
        if r.get("track") not in (None, ""):
            by_video.setdefault(r["path"], []).append(r)
    table = []
    for path, faces in by_video.items():
        threshold = float(faces[0]["threshold"])
        number = np.array([int(r["track"]) for r in faces])
        scores = tracks.track_scores(number, [float(r["p_male"]) for r in faces], threshold)
        for k in np.unique(number):
            own = [r for r, n in zip(faces, number) if n == k]
            times = [float(r["time"]) for r in own]
            label = called_name(scores["p_male"][k], threshold)
            other = scores["disagreeing"][k]
            shown = max(own, key=lambda r: int(r["w"]) * int(r["h"]))
            table.append({
                "path": path, "track": int(k), "start": min(times), "end": max(times),
                "faces": int(scores["faces"][k]), "seconds": every * int(scores["faces"][k]),
                "p_male": float(scores["p_male"][k]), "label": label,
                "disagreeing": int(other),
                "note": (f"{other} of {len(own)} faces called "
                         f"{CLASS_NAMES[1 - CLASS_NAMES.index(label)]}" if other else ""),
                "time": float(shown["time"]), **{c: int(shown[c]) for c in "xywh"}})
    return table


def track_table_path(output):
    """predictions.csv -> predictions.tracks.csv."""
    return os.path.splitext(output)[0] + ".tracks.csv"


def write_track_table(output, table):
    """<output>.tracks.csv: one row per track (TRACK_COLUMNS)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) and k in ("start", "end", "time") else
              f"{v:.6f}" if k == "p_male" else f"{v:g}" if k == "seconds" else v
              for k, v in ((k, t[k]) for k in TRACK_COLUMNS)] for t in table]
    write_csv(track_table_path(output), TRACK_COLUMNS, cells)
    return track_table_path(output)


@dataclasses.dataclass(frozen=True)
class Tracks:
    """What finish_tracks wrote: the track table (track_table's dicts) and its file, and the
    --annotate sheet of each video that has one; `tracks_text` says it in words."""
    path: str  # <output>.tracks.csv (absolute path)
    table: list
    sheets: dict  # video -> its sheet of frames


def finish_tracks(config, header, rows, videos, skipped, threshold):
    """results.write_results' part for videos: <output>.tracks.csv from the CSV's rows and,
    with --annotate, a sheet of each video's frames (annotate_video). Returns the Tracks."""
    table = track_table([dict(zip(header, map(str, row))) for row in rows], config.every)
    path = os.path.abspath(write_track_table(config.output, table))
    sheets = {}
    if config.annotate:
        readable = [p for p in videos if p not in skipped]
        names = annotate.copy_names(readable, config.annotate)
        for video in readable:
            sheet = os.path.splitext(names[video])[0] + ".tracks.jpg"
            if annotate_video(video, rows_of(header, rows, video), table, config.every,
                              threshold, sheet):
                sheets[video] = sheet
    return Tracks(path, table, sheets)


def tracks_text(found):
    """Tracks in words: the file written and its number of tracks, then each video's sheet."""
    return "\n".join([f"wrote {found.path} ({len(found.table)} tracks)",
                      *(f"annotated {video}: {sheet}" for video, sheet in found.sheets.items())])


def rows_of(header, rows, path):
    return [dict(zip(header, map(str, row))) for row in rows if row[0] == path]


def annotate_video(path, rows, table, every, threshold, sheet, frames=SHEET_FRAMES):
    """--annotate for a video: one sheet (annotate.frame_sheet) of up to `frames` sampled
    frames, each the first of one or more tracks (evenly chosen when there are more), with
    every face of the frame boxed and captioned with its track number, and its track's label
    and P(male). Returns the sheet's path; None when the video has no face."""
    from PIL import Image
    own = {t["track"]: t for t in table if t["path"] == path}
    if not own:
        return None
    starts = sorted({t["start"] for t in own.values()})
    if len(starts) > frames:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, frames).round().astype(int)]
    pictures, captions = [], []
    for t in starts:
        try:
            _, frame = next(sampled_frames(path, every, t))
        except (StopIteration, DataError):  # changed since it was read: the CSV stands
            continue
        photo = Image.fromarray(frame)
        photo.thumbnail((inputs.MAX_PHOTO_SIDE,) * 2, Image.BILINEAR)
        scale = frame.shape[1] / photo.size[0]
        drawn = []
        for r in rows:
            if abs(float(r["time"]) - t) < 1e-3:
                track = own[int(r["track"])]
                drawn.append((*[round(int(r[c]) / scale) for c in "xywh"], track["p_male"],
                              track["label"], f"#{track['track']}"))
        pictures.append(annotate.draw_faces(photo, drawn, threshold))
        captions.append(f"{clock(t)} ({t:.1f} s): {len(drawn)} face(s)")
    annotate.save(annotate.frame_sheet(pictures, captions,
                                       f"{os.path.basename(path)}: {len(own)} tracks"),
                  sheet, quality=90)
    return sheet


def timelines(rows, every, max_tracks=TIMELINE_TRACKS):
    """For report.audit_page: per video among the CSV's `rows` (dicts), its path, duration and
    tracks (track_table's dicts, at most `max_tracks`, the longest kept, in time order), each
    with `thumbnail`, its largest face cut from the frame again (None when it cannot be)."""
    from PIL import Image
    table = track_table(rows, every)
    out = []
    for path in dict.fromkeys(t["path"] for t in table):
        own = [t for t in table if t["path"] == path]
        shown = sorted(sorted(own, key=lambda t: -t["faces"])[:max_tracks],
                       key=lambda t: (t["start"], t["track"]))
        try:
            duration = open_video(path)[2]
        except DataError:
            duration = float("nan")
        if not np.isfinite(duration):
            duration = max(t["end"] for t in own) + every
        for t in shown:
            t["thumbnail"] = None
            try:
                _, frame = next(sampled_frames(path, every, t["time"]))
            except (StopIteration, DataError):
                continue
            photo = Image.fromarray(frame)
            box = photo_faces.crop_box([t[c] for c in "xywh"], *photo.size)
            t["thumbnail"] = photo.crop(box).resize((THUMBNAIL,) * 2, Image.BILINEAR)
        out.append({"path": path, "duration": duration, "tracks": shown,
                    "left_out": len(own) - len(shown)})
    return out


def clock(seconds):
    """1:02:03 / 2:03 for a time in seconds; '?' when unknown."""
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return (f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600
            else f"{s // 60}:{s % 60:02d}")
