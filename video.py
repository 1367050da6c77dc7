"""Video files for predict.py: sample a frame every few seconds, find and score its faces, and
keep a progress record so that a stopped run continues where it was.

Frames are read with OpenCV's VideoCapture (its FFmpeg build reads the usual containers and
codecs). A frame is sampled every `every` seconds of the video's own clock (frame index / frame
rate), so the rows' times do not depend on how fast the machine reads. Each sampled frame is a
photo to labelling.py: its faces are found (MTCNN), cut to the model's crop and scored, one row
per face with its time. Every CHECKPOINT_FRAMES sampled frames the rows so far and the next
time to sample are written (atomically) to `<output>.progress/`; a rerun of the same command
reads them back and seeks on from there. The folder goes once the CSV is written.
"""

import hashlib
import json
import os
import shutil

import numpy as np

import data
import labelling
from common import DataError, ModelError
from outputs import write_json

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts")
CHECKPOINT_FRAMES = 50  # sampled frames between progress records: what a stop can lose


def is_video(path):
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def list_video_files(folder):
    """Video files under `folder` (recursive, hidden ones skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and is_video(f)]
    return found


def collect_inputs(paths):
    """(image files, video files) named by `paths`: a file by its extension (an unknown one is
    tried as an image), a folder searched recursively for both; each once."""
    images, videos = [], []
    for path in paths:
        if os.path.isdir(path):
            images += data.list_image_files(path)
            videos += list_video_files(path)
        elif os.path.isfile(path):
            (videos if is_video(path) else images).append(path)
        else:
            raise DataError(f"{path}: no such file or folder; pass image or video files or "
                            "folders")
    images, videos = list(dict.fromkeys(images)), list(dict.fromkeys(videos))
    if not images and not videos:
        raise DataError(f"{', '.join(paths)}: no images found ({', '.join(data.IMAGE_EXTENSIONS)}"
                        f") and no videos ({', '.join(VIDEO_EXTENSIONS)}); check the path")
    return images, videos


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


def progress_file(output, path, args, threshold):
    """The record of one video in this run: named by what would change its rows (the file,
    its size and time, the sampling, the model, the threshold, the face size, --tta)."""
    st = os.stat(path)
    key = json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns, args.every,
                      os.path.abspath(args.model_path), threshold, args.min_face_size,
                      bool(args.tta)])
    name = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(progress_folder(output), f"{name}.json")


def read_progress(record):
    """(rows so far, the next time to sample, finished?) from a record; nothing for none."""
    if not os.path.exists(record):
        return [], 0.0, False
    try:
        with open(record) as f:
            saved = json.load(f)
        return [tuple(r) for r in saved["rows"]], float(saved["next_time"]), saved["finished"]
    except (OSError, ValueError, KeyError, TypeError):
        return [], 0.0, False  # a damaged record: start that video again


def remove_progress(output):
    shutil.rmtree(progress_folder(output), ignore_errors=True)


# ---------------------------------------------------------------------------
# Predicting

def predict_video(runner, image_size, path, args, threshold, detector, geometry=None,
                  checkpoint_frames=None):
    """Rows (path, time, face, x, y, w, h, P(male), label, threshold[, tta]) for every face in
    the frames of `path` sampled every args.every seconds, continuing from its progress record
    (`checkpoint_frames` sampled frames apart)."""
    import inference
    checkpoint_frames = checkpoint_frames or CHECKPOINT_FRAMES
    record = progress_file(args.output, path, args, threshold)
    rows, start, finished = read_progress(record)
    if finished:
        return rows
    _, fps, duration = open_video(path)  # an unreadable video stops here, naming itself
    if args.verbose and start:
        print(f"  {path}: resuming at {clock(start)} ({len(rows)} faces so far)")
    pending, frames = [], 0

    def save(next_time, done):
        if pending:
            scores = inference.score_images(runner, np.stack([c for *_, c in pending]),
                                            args.batch_size)
            rows.extend((path, f"{t:.3f}", k, *box, *labelling.score_cells(p, threshold, args))
                        for (t, k, box, _), p in zip(pending, scores))
            pending.clear()
        write_json(record, {"video": os.path.abspath(path), "next_time": next_time,
                            "finished": done, "rows": rows})
        if args.verbose:
            print(f"  {path}: {clock(min(next_time, duration))} of {clock(duration)}, "
                  f"{len(rows)} faces")

    next_time = start
    for t, frame in sampled_frames(path, args.every, start):
        from PIL import Image
        photo = Image.fromarray(frame)
        photo.thumbnail((labelling.MAX_PHOTO_SIDE,) * 2, Image.BILINEAR)
        scale = frame.shape[1] / photo.size[0]
        try:
            faces = labelling.face_crops(photo, scale, image_size, args.min_face_size,
                                         detector, geometry)
        except Exception as err:
            raise ModelError(f"the face detector failed on {path} at {t:.3f} s "
                             f"({type(err).__name__}: {err}); check the mtcnn install") from None
        pending += [(t, k, box, crop) for k, (box, crop) in enumerate(faces)]
        frames += 1
        next_time = t + args.every
        if frames % checkpoint_frames == 0:
            save(next_time, False)
    save(next_time, True)
    return rows


def clock(seconds):
    """1:02:03 / 2:03 for a time in seconds; '?' when unknown."""
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return (f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600
            else f"{s // 60}:{s % 60:02d}")
