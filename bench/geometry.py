"""Which face crop should a model be trained and used on? A quick experiment, by factor.

    python bench/geometry.py --faces ../faces --facecom ../shared/data \
        [--geometries none box:1.0 aligned:1.0 aligned:1.25] [--model_path model_balanced.h5]

For each geometry, every image (training sample and dev folders alike) is cut by it, the
model's frozen backbone gives its pooled features (cached, features.py), a logistic head is
fitted on the training sample, and the dev folders are scored with it at the threshold that
gives the best worst-group macro-F1. Printed per geometry: each dev source's macro-F1, the
female and male recall of every (source, age band) group of the folders with ages, every
degradation, and the worst of them. It costs minutes, not a training run: it ranks the crops
for a model that has to learn from them, not the shipped model's own numbers. The backbone
comes from a model trained on crops as given, which favours `none`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from facegender.data import attributes  # noqa: E402
from facegender.data import decoding, listing  # noqa: E402
from facegender.faces import finder as faces  # noqa: E402
from facegender.training import features  # noqa: E402
from facegender.evaluation import metrics  # noqa: E402
from facegender.model import network as model_lib  # noqa: E402
from facegender.core.common import default_cache_dir  # noqa: E402

AGE_SOURCES = ("utkface", "aaf")
DEGRADATIONS = ("blurred", "foggy", "lowlight", "noisy", "rainy", "resized", "sunny")


def sample(folder, limit, rng, by_age):
    """(paths, labels, group names) of up to `limit` images of `folder` per class (per class
    and age band with `by_age`)."""
    paths, labels = listing.list_labeled_images(folder)
    bands = [""] * len(paths)
    if by_age:
        table, _ = attributes.read_attributes(folder)
        bands = attributes.attribute_values(table, paths, "age")
    keep = []
    for key in sorted(set(zip(labels.tolist(), bands))):
        idx = [i for i, k in enumerate(zip(labels.tolist(), bands)) if k == key]
        keep += sorted(rng.permutation(idx)[:limit].tolist())
    return [paths[i] for i in keep], labels[keep], [bands[i] for i in keep]


def dev_groups(name, paths, bands):
    if name.startswith("facecom_distorted"):
        return [f"{name} {next(d for d in DEGRADATIONS if d in os.path.basename(p))}"
                for p in paths]
    return [f"{name} {b}".strip() for b in bands]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faces", required=True, help="the folder build_faces.py wrote")
    p.add_argument("--facecom", required=True, help="the folder holding facecom/ and "
                   "facecom_distorted/")
    p.add_argument("--geometries", nargs="+",
                   default=["none", "box:1.0", "box:1.3", "aligned:1.0", "aligned:1.3"])
    p.add_argument("--model_path", default="model_balanced.h5")
    p.add_argument("--cache_dir", default=default_cache_dir())
    args = p.parse_args()
    rng = np.random.default_rng(0)
    model = model_lib.load_model(args.model_path)
    size = model_lib.input_size(model)

    train = [(os.path.join(args.facecom, "facecom/train"), 2000, False),
             (os.path.join(args.facecom, "facecom_distorted/train"), 200, False),
             (os.path.join(args.faces, "celeba/train"), 1000, False),
             (os.path.join(args.faces, "scut/train"), 500, False),
             (os.path.join(args.faces, "utkface/train"), 250, True),
             (os.path.join(args.faces, "aaf/train"), 250, True)]
    dev = [("facecom/dev", os.path.join(args.facecom, "facecom/dev"), 10 ** 6, False),
           ("facecom_distorted/dev", os.path.join(args.facecom, "facecom_distorted/dev"),
            10 ** 6, False),
           ("celeba/dev", os.path.join(args.faces, "celeba/dev"), 500, False),
           ("scut/dev", os.path.join(args.faces, "scut/dev"), 10 ** 6, False),
           ("utkface/dev", os.path.join(args.faces, "utkface/dev"), 10 ** 6, True),
           ("aaf/dev", os.path.join(args.faces, "aaf/dev"), 10 ** 6, True)]
    tr_paths, tr_y = [], []
    for folder, limit, by_age in train:
        paths, y, _ = sample(folder, limit, rng, by_age)
        tr_paths += paths
        tr_y += y.tolist()
    dv_paths, dv_y, dv_groups, dv_sources = [], [], [], []
    for name, folder, limit, by_age in dev:
        paths, y, bands = sample(folder, limit, rng, by_age)
        dv_paths += paths
        dv_y += y.tolist()
        dv_groups += dev_groups(name, paths, bands)
        dv_sources += [name] * len(paths)
    tr_y, dv_y = np.array(tr_y), np.array(dv_y)
    print(f"{len(tr_paths)} training images, {len(dv_paths)} dev images, {size} px")

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for text in args.geometries:
        geometry = faces.parse_geometry(text)
        found = decoding.main_faces(tr_paths + dv_paths, geometry, args.cache_dir, 0)
        reader = decoding.ImageReader(size, geometry, found)
        no_face = decoding.faceless(tr_paths + dv_paths, found)
        x, mirrored, ok = features.pooled_features(model, tr_paths + dv_paths, args.cache_dir,
                                                   verbose=0, reader=reader)
        x, mirrored = np.asarray(x), np.asarray(mirrored)
        n = len(tr_paths)
        head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000,
                                                                  class_weight="balanced"))
        head.fit(np.concatenate([x[:n], mirrored[:n]]), np.concatenate([tr_y, tr_y]))
        scores = head.predict_proba(x[n:])[:, 1]
        groups = np.array(dv_groups)
        threshold, _ = metrics.best_threshold(dv_y, scores, groups=groups)
        print(f"\n== {text}: threshold {threshold:.2f}, no face found in "
              f"{len(no_face)} of {len(tr_paths) + len(dv_paths)} images")
        by_source = metrics.group_table(dv_sources, dv_y, scores, threshold)
        print("  " + ", ".join(f"{r['group']} {r['macro_f1']:.4f}" for r in by_source))
        worst = []
        for row in metrics.group_table(dv_groups, dv_y, scores, threshold):
            if row["group"] in by_source_names(by_source):
                continue
            f, m = row.get("female"), row.get("male")
            cells = [f"{row['group']:<32}"]
            for name, counts in (("female", f), ("male", m)):
                if counts and counts[1]:
                    cells.append(f"{name} {counts[0] / counts[1]:.3f} ({counts[1]})")
                    worst.append((counts[0] / counts[1], f"{row['group']} {name}"))
            print("  " + "  ".join(cells))
        worst.sort()
        print("  worst groups: " + ", ".join(f"{g} {r:.3f}" for r, g in worst[:4]))


def by_source_names(rows):
    return {r["group"] for r in rows}


if __name__ == "__main__":
    main()
