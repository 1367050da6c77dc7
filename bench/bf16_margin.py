"""How far OpenVINO's bfloat16 mode moves the model's scores, in log-odds, on labelled folders.

    python bench/bf16_margin.py DIR [DIR ...] [--model_path model_balanced.h5] [--limit 2000]

`--precision bf16` scores again in float32 every image whose bfloat16 score lands within
inference.BF16_RECHECK_LOGIT (log-odds) of the threshold; this prints, for each folder (images
drawn at random, up to --limit) and for all of them together, the percentiles of
|logit(P bf16) - logit(P f32)|, the share of images that move by less than that margin, and the
share that land near the model's threshold (what --precision bf16 scores twice), and how many
labels the default (`--precision auto`: bf16, float32 near the threshold) gives that float32
does not: none is the goal. Set the margin from training folders, not from the dev folders the
agreement is reported on.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from facegender.data import decoding, listing  # noqa: E402
from facegender.runtime import inference  # noqa: E402
from facegender.model import network as model_lib  # noqa: E402
from facegender.model import sidecar  # noqa: E402
from facegender.core.common import default_cache_dir  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="folders holding female/ and male/")
    p.add_argument("--model_path", default=os.path.join(HERE, "model_balanced.h5"))
    p.add_argument("--limit", type=int, default=2000, help="images drawn from each folder")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--cache_dir", default=default_cache_dir(), help="the landmark cache's root")
    args = p.parse_args(argv)

    model = model_lib.load_model(args.model_path)
    size = model_lib.input_size(model)
    threshold = sidecar.decision_threshold(args.model_path)[0]
    geometry = sidecar.face_geometry(args.model_path)
    runners = {precision: inference.make_runner(model, "openvino", precision, args.model_path)
               for precision in ("f32", "bf16")}
    if runners["bf16"].name != "openvino bf16":
        raise SystemExit("this CPU has no bfloat16: nothing to measure")
    runners["auto"] = inference.make_runner(model, "openvino", "auto", args.model_path,
                                            threshold=threshold)
    margin = inference.BF16_RECHECK_LOGIT
    cut = inference.logit(threshold)
    print(f"|change of log-odds|, bfloat16 against float32, {args.model_path}; margin {margin}")
    print(f"  {'folder':<50} {'images':>7} {'median':>7} {'99%':>7} {'max':>7} "
          f"{'under margin':>13} {'near threshold':>15} {'labels differ (auto)':>21}")
    moves, nears, flips = [], [], []
    for folder in args.folders + ["all"]:
        if folder == "all":
            move, near, flip = (np.concatenate(x) for x in (moves, nears, flips))
        else:
            paths = listing.list_labeled_images(folder)[0]
            paths = [paths[i] for i in
                     np.random.default_rng(0).permutation(len(paths))[:args.limit]]
            # The faces the model is fed in use: its sidecar's geometry (or as given).
            reader = decoding.ImageReader(size, geometry, decoding.main_faces(paths, geometry,
                                                                      args.cache_dir, 0))
            scores = {name: inference.score_paths(runner, paths, size, args.batch_size, 0,
                                                  reader=reader)[0]
                      for name, runner in runners.items()}
            readable = np.isfinite(scores["f32"])  # unreadable files have no score
            fast = inference.logit(scores["bf16"][readable])
            move = np.abs(fast - inference.logit(scores["f32"][readable]))
            near = np.abs(fast - cut) < margin
            flip = ((scores["auto"][readable] >= threshold)
                    != (scores["f32"][readable] >= threshold))
            moves.append(move)
            nears.append(near)
            flips.append(flip)
        median, p99, top = np.percentile(move, [50, 99, 100])
        print(f"  {folder:<50} {len(move):7d} {median:7.3f} {p99:7.3f} {top:7.3f} "
              f"{np.mean(move < margin):13.2%} {np.mean(near):15.2%} {int(flip.sum()):21d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
