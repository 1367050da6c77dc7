"""Synthetic videos of face photos for the video benches (video_tracks.py, video_speed.py).

A clip is a run of shots, each on its own smooth background of muted colours; in each shot one
to three people (face photos from labelled folders) appear for 3-10 s each, entering and
leaving at their own times, drifting slowly, growing or shrinking a little, and lit by a light
that brightens and dims. Every person appears once, in one shot, so each is one appearance:
the ground truth a tracker should find. The images are only read; the clip is written where
asked (never into the repository).
"""

import os

import numpy as np

SIZE = (1280, 720)  # 720p
FPS = 25


def pick_people(folders, n, seed):
    """[(path, label)] of `n` images drawn at random (seeded) from the pooled labelled folders
    (each holding female/ and male/)."""
    from facegender.data import listing
    pool = []
    for folder in folders:
        paths, labels = listing.list_labeled_images(folder, required=())
        pool += list(zip(paths, labels))
    chosen = np.random.default_rng(seed).choice(len(pool), n, replace=len(pool) < n)
    return [pool[i] for i in chosen]


def background(rng, size=SIZE):
    """A smooth, muted picture: random colours on a coarse grid, upsampled."""
    import cv2
    grey = rng.uniform(60, 190)
    coarse = grey + rng.uniform(-55, 55, (5, 8, 3))
    return np.clip(cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC), 0, 255).astype(
        np.uint8)


def plan(people, rng, size=SIZE):
    """The shots and appearances: [(start, end, background)], and per person a dict with its
    shot, label, start and end (s), centre and height at its start and their drift per
    second. People are placed in up to three columns, so faces never overlap."""
    shots, appearances, t, k = [], [], 0.0, 0
    w, h = size
    while k < len(people):
        n = min(int(rng.integers(1, 4)), len(people) - k)
        durations = rng.uniform(3, 10, n)
        length = durations.max() + rng.uniform(0.5, 2)
        columns = rng.permutation(3)[:n]
        for j in range(n):
            start = t + rng.uniform(0, length - durations[j])
            appearances.append({
                "person": k + j, "path": people[k + j][0], "label": int(people[k + j][1]),
                "shot": len(shots), "start": start, "end": start + durations[j],
                "centre": np.array([(columns[j] + 0.5) * w / 3 + rng.uniform(-60, 60),
                                    h * rng.uniform(0.42, 0.58)]),
                "drift": rng.uniform(-15, 15, 2) * [1, 0.3],
                "height": rng.uniform(0.3, 0.45) * h, "grow": rng.uniform(-0.02, 0.02),
                "light": (rng.uniform(0.08, 0.18), rng.uniform(2, 5), rng.uniform(0, 6.3))})
        shots.append((t, t + length, background(rng, size)))
        t += length
        k += n
    return shots, appearances


def place(a, t):
    """(left, top, width, height) of appearance `a`'s photo at time t, and its light gain."""
    dt = t - a["start"]
    height = a["height"] * (1 + a["grow"] * dt)
    width = height * a["aspect"]
    cx, cy = a["centre"] + a["drift"] * dt
    amplitude, period, phase = a["light"]
    return ((int(round(cx - width / 2)), int(round(cy - height / 2)), int(round(width)),
             int(round(height))), 1 + amplitude * np.sin(2 * np.pi * dt / period + phase))


def write_clip(path, people, seed=0, fps=FPS, size=SIZE, seconds=None, codec="mp4v"):
    """Write the clip of `people` ([(image path, label)]) to `path`; returns its appearances
    (plan's dicts, with each photo's aspect). With `seconds`, people are taken in turn again
    until the clip is that long, and it is cut there."""
    import cv2
    from PIL import Image
    rng = np.random.default_rng(seed)
    if seconds:  # enough people for the length: about 3 s of clip per person
        people = [people[i % len(people)] for i in range(int(seconds / 3) + 3)]
    shots, appearances = plan(people, rng, size)
    if seconds:
        appearances = [a for a in appearances if a["start"] < seconds - 1]
        for a in appearances:
            a["end"] = min(a["end"], seconds)
    photos = {}
    for a in appearances:
        if a["path"] not in photos:
            photos[a["path"]] = np.asarray(Image.open(a["path"]).convert("RGB"))
        a["aspect"] = photos[a["path"]].shape[1] / photos[a["path"]].shape[0]
    end = seconds or shots[-1][1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path} with codec {codec}")
    w, h = size
    for i in range(int(round(end * fps))):
        t = i / fps
        shot = next(s for s in shots if s[0] <= t < s[1]) if t < shots[-1][1] else shots[-1]
        frame = shot[2].copy()
        for a in appearances:
            if not a["start"] <= t < a["end"]:
                continue
            (x, y, bw, bh), gain = place(a, t)
            photo = cv2.resize(photos[a["path"]], (bw, bh), interpolation=cv2.INTER_AREA)
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            frame[y0:y1, x0:x1] = np.clip(photo[y0 - y:y1 - y, x0 - x:x1 - x] * gain, 0, 255)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return appearances


def appearance_of(appearances, t, box, fps=FPS):
    """The appearance whose photo holds the centre of face `box` (x, y, w, h) sampled at time
    t (the frame round(t * fps), as video.sampled_frames reads), and whose face it is (at
    least half the photo's height: the photos are face crops); else None (a face found where
    no photo is, or a small face inside one: a false detection, or someone behind)."""
    t = round(t * fps) / fps
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    for k, a in enumerate(appearances):
        if a["start"] <= t < a["end"]:
            (x, y, bw, bh), _ = place(a, t)
            if x <= cx < x + bw and y <= cy < y + bh and box[3] >= bh / 2:
                return k
    return None


def warm_up(folder, people, model_path, predict_py):
    """Run predict.py once on a two-second clip, so that the timed runs find the model and the
    face finder already converted in the cache (the first run on a machine converts them)."""
    import subprocess
    import sys
    clip = os.path.join(folder, "warm_up.mp4")
    write_clip(clip, people[:1], seconds=2)
    subprocess.run([sys.executable, predict_py, clip, "--model_path", model_path, "--output",
                    os.path.join(folder, "warm_up.csv"), "--verbose", "0"],
                   capture_output=True, check=True)
