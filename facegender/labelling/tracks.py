"""Face tracks in a video: the faces of successive sampled frames linked into appearances, and
one label per appearance. NumPy only, pure functions; video wires them to the frames.

A track is one appearance: a face followed from the sampled frame it is first found in until it
is lost for longer than a gap, or the shot is cut. It is not an identity: the same person in
two shots (or back after leaving the picture) is two tracks.

- Shot cuts (`picture_signature`, `picture_changes`, `shot_numbers`): each sampled frame is
  reduced to a coarse joint colour histogram and a 16 x 9 grid of block colours; two successive
  sampled frames lie on either side of a cut when their histograms differ by more than
  CUT_COLOUR (half the L1 distance: 0 = the same colours, 1 = none in common) or their grids by
  more than CUT_LAYOUT (the mean absolute difference, 0 to 1). A face or camera that moves a
  little within a shot changes a few blocks and few colours; a new set changes most of both.
- Linking (`link`): within a shot, a face joins the track whose last face it overlaps most
  (box IoU at least MIN_IOU) or whose landmarks are nearest (mean distance of the five points
  at most MAX_LANDMARK_SHIFT of the face's size), when that track was last seen at most
  `max_gap` seconds before; each track takes at most one face per frame, best pairs first.
  Every other face starts a track.
- Labels (`track_scores`): a track's P(male) is the sigmoid of the mean log-odds of its faces'
  P(male), so one confident frame does not outvote several, and one blurred frame does not
  flip a track; `disagreeing` counts the faces whose own call is the other label.
"""

import numpy as np
from facegender.core.common import called

HISTOGRAM_BINS = 4  # per colour channel: 64 joint bins, coarse enough to ignore motion and noise
SIGNATURE_SIDE = 64  # a frame is subsampled to about this many pixels a side before counting
GRID = (9, 16)  # rows and columns of the block colours (a 16:9 frame's blocks are square)
# Set on bench/video_tracks.py's held-out clip (21 cuts), halfway: within a shot, sampled 0.25 to
# 2 s apart, the histograms differed by at most 0.18 and the grids by at most 0.055; across a
# cut the grids differed by at least 0.110 (the histograms by as little as 0.16, so the grid
# finds most cuts; the histogram catches a change of light on a still layout).
CUT_COLOUR = 0.35
CUT_LAYOUT = 0.08
MIN_IOU = 0.3  # box overlap (intersection over union) that links a face to a track
MAX_LANDMARK_SHIFT = 0.35  # mean landmark distance, as a share of the face's side, that links
MAX_SIZE_RATIO = 1.6  # a face this much larger or smaller than the track's last is not it
MIN_GAP_SECONDS = 1.0  # a track survives at least this long unseen (a missed detection)
GAP_FRAMES = 2  # ... and at least this many sampled intervals
EPS = 1e-6  # P(male) is clipped to [EPS, 1 - EPS] before its log-odds


def max_gap(every):
    """Seconds a track may go unseen and still take a face: max(MIN_GAP_SECONDS, GAP_FRAMES
    sampled intervals of `every` seconds), so one missed detection does not split a track."""
    return max(MIN_GAP_SECONDS, GAP_FRAMES * every)


# ---------------------------------------------------------------------------
# Shot cuts

def picture_signature(frame, bins=HISTOGRAM_BINS, side=SIGNATURE_SIDE, grid=GRID):
    """A frame's colours, for finding cuts: its joint colour histogram (bins ** 3 values summing
    to 1), then the mean colour of each block of a `grid` (rows x columns x 3 values, 0 to 1).

    Parameters
    ----------
    frame : (height, width, 3) uint8 array, RGB
    bins : levels per channel of the histogram
    side : the frame is subsampled by a whole step to about this many pixels on its long side
    grid : (rows, columns) of blocks (fewer where the subsampled frame is smaller)
    """
    frame = np.asarray(frame)
    step = max(1, max(frame.shape[:2]) // side)
    small = frame[::step, ::step, :3]
    levels = small.astype(np.int64) * bins // 256
    index = (levels[..., 0] * bins + levels[..., 1]) * bins + levels[..., 2]
    counts = np.bincount(index.ravel(), minlength=bins ** 3).astype(float)
    rows, columns = min(grid[0], small.shape[0]), min(grid[1], small.shape[1])
    h, w = small.shape[0] // rows, small.shape[1] // columns
    blocks = small[:rows * h, :columns * w].reshape(rows, h, columns, w, 3).mean(axis=(1, 3))
    layout = np.zeros((*grid, 3))
    layout[:rows, :columns] = blocks / 255
    return np.concatenate([counts / counts.sum(), layout.ravel()])


def picture_changes(a, b, bins=HISTOGRAM_BINS):
    """(colour change, layout change) between two signatures: half the L1 distance of their
    histograms, in [0, 1] (0: the same colours in the same amounts; 1: no colour in common),
    and the mean absolute difference of their block colours, in [0, 1]."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = bins ** 3
    return (0.5 * float(np.abs(a[:n] - b[:n]).sum()), float(np.abs(a[n:] - b[n:]).mean()))


def is_cut(a, b, cut_colour=CUT_COLOUR, cut_layout=CUT_LAYOUT):
    """Whether two successive sampled frames' signatures lie on either side of a cut."""
    colour, layout = picture_changes(a, b)
    return colour > cut_colour or layout > cut_layout


def shot_numbers(signatures, first_shot=0, previous=None):
    """The shot of each sampled frame, counting from `first_shot`: one more after every cut
    (`is_cut`) from the frame before (`previous`, the signature of the frame before the first,
    continues a count begun earlier).

    Returns an int array, one per signature.
    """
    shots, shot = [], first_shot
    for signature in signatures:
        if previous is not None and is_cut(previous, signature):
            shot += 1
        shots.append(shot)
        previous = signature
    return np.array(shots, dtype=int)


# ---------------------------------------------------------------------------
# Linking

def box_iou(a, b):
    """Intersection over union of two boxes (x, y, w, h)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def landmark_shift(a_landmarks, a_box, b_landmarks, b_box):
    """Mean distance between two faces' five landmarks, as a share of their mean side."""
    size = (np.sqrt(a_box[2] * a_box[3]) + np.sqrt(b_box[2] * b_box[3])) / 2
    distance = np.linalg.norm(np.asarray(a_landmarks, float) - np.asarray(b_landmarks, float),
                              axis=-1).mean()
    return float(distance / max(size, 1e-9))


def _affinity(track_box, track_landmarks, box, landmarks):
    """(linkable?, cost: lower is a better pair) of a track's last face and a new face."""
    ratio = np.sqrt(box[2] * box[3]) / max(np.sqrt(track_box[2] * track_box[3]), 1e-9)
    if not 1 / MAX_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO:
        return False, np.inf
    iou = box_iou(track_box, box)
    shift = landmark_shift(track_landmarks, track_box, landmarks, box)
    return (iou >= MIN_IOU or shift <= MAX_LANDMARK_SHIFT), shift - iou


def link(times, boxes, landmarks, shots, gap):
    """The track of every face of a video's sampled frames.

    Parameters
    ----------
    times : (n,) array of float
        Each face's time in seconds; faces of one frame share it. In time order.
    boxes : (n, 4) array
        Each face's box (x, y, w, h), in pixels of the frame.
    landmarks : (n, 5, 2) array
        Each face's five landmarks (eyes, nose tip, mouth corners), same pixels.
    shots : (n,) array of int
        The shot of each face's frame (`shot_numbers`): no track spans two.
    gap : float
        Seconds a track may go unseen and still take a face (`max_gap`).

    Returns
    -------
    (n,) int array: track numbers, 0, 1, ... in order of each track's first face.
    """
    times = np.asarray(times, float)
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    landmarks = np.asarray(landmarks, float).reshape(-1, 5, 2)
    shots = np.asarray(shots)
    if np.any(np.diff(times) < 0):
        raise ValueError("link: faces must be in time order")
    track = np.full(len(times), -1, dtype=int)
    open_tracks = []  # [track number, last face index]
    n_tracks = 0
    for t in np.unique(times):
        faces = np.flatnonzero(times == t)
        shot = shots[faces[0]]
        open_tracks = [(k, last) for k, last in open_tracks
                       if shots[last] == shot and t - times[last] <= gap + 1e-9]
        pairs = []
        for j, (k, last) in enumerate(open_tracks):
            for i in faces:
                ok, cost = _affinity(boxes[last], landmarks[last], boxes[i], landmarks[i])
                if ok:
                    pairs.append((cost, j, i))
        taken_tracks, taken_faces = set(), set()
        for cost, j, i in sorted(pairs):
            if j in taken_tracks or i in taken_faces:
                continue
            taken_tracks.add(j)
            taken_faces.add(i)
            track[i] = open_tracks[j][0]
            open_tracks[j] = (open_tracks[j][0], i)
        for i in faces:  # left to right (the frame's face order): new appearances
            if i not in taken_faces:
                track[i] = n_tracks
                open_tracks.append((n_tracks, i))
                n_tracks += 1
    return track


# ---------------------------------------------------------------------------
# One label per track

def log_odds(p):
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def track_scores(track, p_male, threshold):
    """Each track's P(male) and call from its faces.

    Parameters
    ----------
    track : (n,) array of int
        Each face's track (`link`); tracks are numbered 0 .. max.
    p_male : (n,) array of float
        Each face's own P(male).
    threshold : float
        The decision threshold: a face or track with P(male) >= threshold is called male.

    Returns
    -------
    dict of arrays, one entry per track number: `p_male` (the sigmoid of the mean log-odds of
    its faces), `male` (bool: the track's call), `faces` (how many), `disagreeing` (faces whose
    own call is not the track's).
    """
    track = np.asarray(track, int)
    p_male = np.asarray(p_male, float)
    n = int(track.max()) + 1 if len(track) else 0
    faces = np.bincount(track, minlength=n)
    mean = np.bincount(track, weights=log_odds(p_male), minlength=n) / np.maximum(faces, 1)
    p_track = 1 / (1 + np.exp(-mean))
    male = called(p_track, threshold) == 1
    face_male = called(p_male, threshold) == 1
    disagreeing = np.bincount(track, weights=(face_male != male[track]), minlength=n)
    return {"p_male": p_track, "male": male, "faces": faces,
            "disagreeing": disagreeing.astype(int)}
