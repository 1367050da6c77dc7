"""How fast predict.py reads a video: a 720p clip at the default sampling, on two cores, as a
multiple of real time (issue 40).

    python bench/video_speed.py --faces ../faces [--minutes 10] [--every SECONDS]

Builds a `--minutes` long 720p, 25 fps clip (bench/video_scenes.py: face photos from the dev
folders of `--faces`, one to three on screen at a time, shots of 4-12 s) in a temporary folder,
runs `predict.py clip.mp4` on it pinned to two cores (all the machine has where it has two),
and prints the video's length over the wall time: 4.0x means ten minutes of video take 2.5
minutes. The time covers everything a user waits for: start-up, decoding, finding faces,
scoring, tracking and the summary.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import video_scenes  # bench/ is the script's folder, first on the path
from video_tracks import SOURCES, read_csv, score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", required=True, help="a folder holding celeba/, utkface/, ... "
                                                  "each with dev/female and dev/male")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--every", type=float, default=None,
                   help="seconds between sampled frames (default: predict.py's)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--model_path", default=os.path.join(ROOT, "model_balanced.h5"))
    args = p.parse_args(argv)
    folders = [os.path.join(args.faces, s, "dev") for s in SOURCES
               if os.path.isdir(os.path.join(args.faces, s, "dev"))]
    cores = sorted(os.sched_getaffinity(0))[:args.cores]
    with tempfile.TemporaryDirectory(prefix="video-speed-") as tmp:
        clip = os.path.join(tmp, "clip.mp4")
        t0 = time.time()
        seconds = args.minutes * 60
        appearances = video_scenes.write_clip(clip, video_scenes.pick_people(folders, 200, 1),
                                              seed=1, seconds=seconds)
        print(f"clip: {args.minutes:g} min at 720p, {video_scenes.FPS} fps, "
              f"{len(appearances)} appearances, {os.path.getsize(clip) / 1e6:.0f} MB "
              f"(built in {time.time() - t0:.0f} s)")
        video_scenes.warm_up(tmp, video_scenes.pick_people(folders, 1, 1), args.model_path,
                             os.path.join(ROOT, "predict.py"))
        out = os.path.join(tmp, "pred.csv")
        command = [sys.executable, os.path.join(ROOT, "predict.py"), clip, "--model_path",
                   args.model_path, "--output", out, "--verbose", "0"]
        if args.every:
            command += ["--every", f"{args.every:g}"]
        t0 = time.time()
        done = subprocess.run(command, capture_output=True, text=True,
                              preexec_fn=lambda: os.sched_setaffinity(0, cores))
        wall = time.time() - t0
        if done.returncode:
            sys.exit(done.stderr.strip())
        rows = read_csv(out)
        tracks = read_csv(os.path.splitext(out)[0] + ".tracks.csv")
        first = done.stdout.splitlines()[0]
    print(first)
    print(f"{len(rows)} faces in {len(tracks)} tracks; {wall:.0f} s on {len(cores)} cores for "
          f"{seconds:.0f} s of video: {seconds / wall:.2f}x real time")
    # The clip is another draw than video_tracks.py's (seed 1): a check of the tracker's
    # thresholds on shots they were not set on.
    r = score(appearances, rows, tracks, float(rows[0]["threshold"]))
    print(f"tracks: appearances found {r['found']}/{r['appearances']}, split {r['split']}, "
          f"merged {r['merged']}; {r['other_tracks']} tracks of other faces")


if __name__ == "__main__":
    main()
