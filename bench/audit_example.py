"""The worked example of auditing a collection (README, docs/usage.md), reproducible.

    python bench/audit_example.py --data_path ../faces/aaf/dev [--sample 100] [--seed 0]

Treats a labelled folder as an archive whose share of women is known: draws a seeded random
sample of `--sample` of its faces as the "labelled sample" (links in a temporary folder, the
images are not copied or changed), runs predict.py on the whole folder with --audit_sample,
and prints the true share beside what predict.py printed.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from facegender.data import listing  # noqa: E402
from facegender.core.common import CLASS_NAMES  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_path", required=True, help="a labelled folder (female/, male/)")
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model_path", default=os.path.join(ROOT, "model_balanced.h5"))
    args = p.parse_args(argv)
    paths, labels = listing.list_labeled_images(args.data_path)
    labels = np.asarray(labels)
    chosen = np.random.default_rng(args.seed).choice(len(paths), args.sample, replace=False)
    print(f"{args.data_path}: {len(paths)} faces, true share of women "
          f"{np.mean(labels == 0):.3f}; sample of {args.sample} (seed {args.seed}): "
          f"{np.sum(labels[chosen] == 0)} women, {np.sum(labels[chosen] == 1)} men")
    with tempfile.TemporaryDirectory(prefix="audit-example-") as tmp:
        sample = os.path.join(tmp, "sample")
        for i in chosen:
            folder = os.path.join(sample, CLASS_NAMES[labels[i]])
            os.makedirs(folder, exist_ok=True)
            os.symlink(os.path.abspath(paths[i]), os.path.join(folder, f"{i}_" +
                                                               os.path.basename(paths[i])))
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "predict.py"), args.data_path,
             "--model_path", args.model_path, "--audit_sample", sample,
             "--output", os.path.join(tmp, "archive.csv"), "--verbose", "0"],
            capture_output=True, text=True)
    print(done.stdout.strip())
    if done.returncode:
        sys.exit(done.stderr.strip())


if __name__ == "__main__":
    main()
