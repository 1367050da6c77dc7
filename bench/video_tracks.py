"""Tracks on a clip of held-out faces, and the sampling density they need (issue 40).

    python bench/video_tracks.py --faces ../faces [--people 50] [--every 0.25 0.5 1 2]

Builds a 720p clip (bench/video_scenes.py) in a temporary folder from `--people` photos drawn
(seeded) from the dev folders of `--faces` (celeba, utkface, scut, aaf: not trained on): each
person on screen once, 3-10 s, one to three to a shot, with cuts between shots. Runs
predict.py on it at each `--every` and prints, for each: the appearances found, split (one
appearance in several tracks) and merged (one track over several appearances), the tracks by
label against the true appearances by label, female and male recall over faces (frame-level)
and over tracks (track-level, the mean log-odds; and a majority vote of the faces, for
comparison), and the seconds it took. No image is written anywhere but the temporary folder.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import video_scenes  # bench/ is the script's folder, first on the path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCES = ("celeba", "utkface", "scut", "aaf")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def recall(called, true, label):
    """(right, total) for one true label."""
    mask = true == label
    return int(np.sum(called[mask] == label)), int(mask.sum())


def score(appearances, rows, table, threshold):
    """The numbers of one run: rows and tracks (predict.py's CSV and tracks CSV) against the
    clip's appearances."""
    owner = np.array([-1 if k is None else k for k in (
        video_scenes.appearance_of(appearances, float(r["time"]), [int(r[c]) for c in "xywh"])
        for r in rows)])
    track = np.array([int(r["track"]) for r in rows])
    true = np.array([appearances[k]["label"] if k >= 0 else -1 for k in owner])
    called = np.array([int(float(r["p_male"]) >= threshold) for r in rows])
    found = {k for k in owner if k >= 0}
    split = sum(len(set(track[owner == k])) > 1 for k in found)
    merged = sum(len(set(owner[(track == t) & (owner >= 0)])) > 1 for t in set(track))
    others = sum(bool(np.all(owner[track == t] < 0)) for t in set(track))
    # Each track stands for the appearance most of its faces belong to.
    track_true, track_called, track_vote = [], [], []
    for t in table:
        mine = track == int(t["track"])
        owners = owner[mine][owner[mine] >= 0]
        if not len(owners):
            continue
        track_true.append(appearances[np.bincount(owners).argmax()]["label"])
        track_called.append(int(t["label"] == "male"))
        track_vote.append(int(called[mine].mean() >= 0.5))
    track_true, track_called, track_vote = map(np.array, (track_true, track_called, track_vote))
    labels = np.array([a["label"] for a in appearances])
    return {
        "appearances": len(appearances), "found": len(found), "split": int(split),
        "merged": int(merged), "other_faces": int(np.sum(owner < 0)),
        "other_tracks": int(others), "faces": len(rows), "tracks": len(table),
        "appearances_by_label": {"female": int(np.sum(labels == 0)),
                                 "male": int(np.sum(labels == 1))},
        "tracks_by_true_label": {"female": int(np.sum(track_true == 0)),
                                 "male": int(np.sum(track_true == 1))},
        "tracks_by_called_label": {"female": int(np.sum(track_called == 0)),
                                   "male": int(np.sum(track_called == 1))},
        "frame_recall": {"female": recall(called[true >= 0], true[true >= 0], 0),
                         "male": recall(called[true >= 0], true[true >= 0], 1)},
        "track_recall": {"female": recall(track_called, track_true, 0),
                         "male": recall(track_called, track_true, 1)},
        "vote_recall": {"female": recall(track_vote, track_true, 0),
                        "male": recall(track_vote, track_true, 1)}}


def fraction(pair):
    return f"{pair[0]}/{pair[1]} = {pair[0] / pair[1]:.3f}" if pair[1] else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", required=True, help="a folder holding celeba/, utkface/, ... "
                                                  "each with dev/female and dev/male")
    p.add_argument("--people", type=int, default=50)
    p.add_argument("--every", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model_path", default=os.path.join(ROOT, "model_balanced.h5"))
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    folders = [os.path.join(args.faces, s, "dev") for s in SOURCES
               if os.path.isdir(os.path.join(args.faces, s, "dev"))]
    people = video_scenes.pick_people(folders, args.people, args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="video-tracks-") as tmp:
        clip = os.path.join(tmp, "held_out.mp4")
        t0 = time.time()
        appearances = video_scenes.write_clip(clip, people, seed=args.seed)
        length = max(a["end"] for a in appearances)
        shots = len({a["shot"] for a in appearances})
        print(f"clip: {len(appearances)} people from {', '.join(folders)} (seed {args.seed}), "
              f"{shots} shots, {length:.0f} s at 720p, {video_scenes.FPS} fps "
              f"(built in {time.time() - t0:.0f} s)")
        video_scenes.warm_up(tmp, people, args.model_path, os.path.join(ROOT, "predict.py"))
        for every in args.every:
            out = os.path.join(tmp, f"every_{every:g}.csv")
            t0 = time.time()
            done = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), clip,
                                   "--model_path", args.model_path, "--every", f"{every:g}",
                                   "--output", out, "--verbose", "0"],
                                  capture_output=True, text=True)
            seconds = time.time() - t0
            if done.returncode:
                sys.exit(done.stderr.strip())
            rows = read_csv(out)
            table = read_csv(os.path.splitext(out)[0] + ".tracks.csv")
            summary = json.load(open(os.path.splitext(out)[0] + ".summary.json"))
            r = score(appearances, rows, table, float(rows[0]["threshold"]))
            r.update(every=every, seconds=round(seconds, 1),
                     times_real_time=round(length / seconds, 2),
                     counts=summary["video"]["all"])
            results[every] = r
            exact = (r["found"] == r["appearances"] and not r["split"] and not r["merged"]
                     and r["tracks"] - r["other_tracks"] == r["appearances"])
            print(f"\n--every {every:g}: {r['faces']} faces in {r['tracks']} tracks, "
                  f"{seconds:.0f} s ({length / seconds:.2f}x real time)")
            print(f"  appearances found {r['found']}/{r['appearances']}, split {r['split']}, "
                  f"merged {r['merged']}: {'exact' if exact else 'NOT exact'}; other faces "
                  f"(not a person's own: small, or outside the photos) {r['other_faces']}, "
                  f"in {r['other_tracks']} tracks of their own")
            print(f"  appearances by label {r['appearances_by_label']}; tracks by true label "
                  f"{r['tracks_by_true_label']}; tracks by called label "
                  f"{r['tracks_by_called_label']}")
            for name in ("female", "male"):
                print(f"  {name} recall: frame-level {fraction(r['frame_recall'][name])}, "
                      f"track-level (mean log-odds) {fraction(r['track_recall'][name])}, "
                      f"majority vote {fraction(r['vote_recall'][name])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
