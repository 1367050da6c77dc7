"""Does the face finder on OpenVINO find what MTCNN on TensorFlow finds, and how much faster?

    python bench/finder_parity.py ../faces/utkface/dev ../shared/data/facecom/dev \
        ../valsets/sunny [--limit 400]

Both finders are shown the same images the way find_faces shows them (decoded as the landmark
cache's first run decodes them, each image's detection view, batches of faces.DETECT_BATCH) and
their main faces (the face the landmark cache keeps) are compared: how often they agree on
face or no face, and, where both find one, how far apart its five landmarks and its box are,
in pixels of the 160-px detection view where the finder works (and rounds to whole pixels),
and of the image. The landmark cache's key (faces.LandmarkCache.VERSION) is shared by the two
finders while they agree on at least 99.5% of images and on landmarks within 0.5 px on
average. Then each finder's rate on the views in memory (detection alone, best of 3 rounds,
in turns).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from facegender.data import decoding, listing  # noqa: E402
from facegender.faces import finder as faces  # noqa: E402


def sample(folders, limit, seed=0):
    """{folder: up to `limit` of its images (class subfolders), drawn at random}."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for folder in folders:
        found = listing.list_labeled_images(folder)[0]
        drawn[folder] = [found[i] for i in sorted(rng.permutation(len(found))[:limit])]
    return drawn


def main_faces(finder, images):
    """The main face (or None) of each image, as find_faces finds it, in batches."""
    out = []
    for start in range(0, len(images), faces.DETECT_BATCH):
        out += faces.find_in_crops(finder, images[start:start + faces.DETECT_BATCH])
    return out


def compare(images, reference, other):
    """Agreement of two finders' main faces; distances in view pixels and image pixels."""
    agree = [(a is None) == (b is None) for a, b in zip(reference, other)]
    both = [(img, a, b) for img, a, b in zip(images, reference, other) if a and b]
    to_view = np.array([faces.CROP_DETECT_SIDE / max(img.size) for img, _, _ in both])
    points = np.array([np.linalg.norm(a.landmarks - b.landmarks, axis=1) for _, a, b in both])
    corners = np.array([np.abs(np.subtract(a.box, b.box)) for _, a, b in both])
    confidence = np.array([abs(a.confidence - b.confidence) for _, a, b in both])
    return {"images": len(images), "agree": float(np.mean(agree)),
            "face_reference": sum(a is not None for a in reference),
            "face_other": sum(b is not None for b in other), "both": len(both),
            "points_view": points * to_view[:, None], "points_image": points,
            "box_view": corners * to_view[:, None], "confidence": confidence}


def report(name, result):
    view, image = result["points_view"], result["points_image"]
    print(f"\n{name}: {result['images']} images; a face found by TensorFlow in "
          f"{result['face_reference']}, by OpenVINO in {result['face_other']}; they agree on "
          f"face or no face for {result['agree']:.2%}")
    if not len(view):
        return
    same = np.mean(np.all(view == 0, axis=1))
    print(f"  landmarks of the {result['both']} faces both found: mean {view.mean():.3f} px, "
          f"max {view.max():.2f} px in the 160-px view ({image.mean():.3f} / {image.max():.2f} "
          f"px of the image); all five identical in {same:.2%}")
    print(f"  box corners/sides: mean {result['box_view'].mean():.3f} px, max "
          f"{result['box_view'].max():.2f} px (view); confidence: max difference "
          f"{result['confidence'].max():.2e}")


def rate(finder, views):
    """Views per second through `finder`, in find_faces' batches."""
    start = time.perf_counter()
    for i in range(0, len(views), faces.DETECT_BATCH):
        finder.find(views[i:i + faces.DETECT_BATCH], min_face_size=faces.CROP_MIN_FACE)
    return len(views) / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="folders of face crops (male/ and female/ in each)")
    p.add_argument("--limit", type=int, default=400, help="images drawn from each folder")
    p.add_argument("--cache_dir", default=None,
                   help="where the OpenVINO conversions are kept (default: the usual cache)")
    args = p.parse_args(argv)

    drawn = sample(args.folders, args.limit)
    images = [decoding.open_rgb(path, faces.CROP_DETECT_SIDE * 2)[0]
              for paths in drawn.values() for path in paths]
    tf_finder, ov_finder = faces.FaceFinder(), faces.OpenVINOFaceFinder(args.cache_dir)
    reference, other = main_faces(tf_finder, images), main_faces(ov_finder, images)
    start = 0
    for folder, paths in drawn.items():
        end = start + len(paths)
        report(folder, compare(images[start:end], reference[start:end], other[start:end]))
        start = end
    whole = compare(images, reference, other)
    report("all", whole)
    ok = whole["agree"] >= 0.995 and (not len(whole["points_view"])
                                      or whole["points_view"].mean() <= 0.5)
    print(f"\nparity (>= 99.5% agree, landmarks within 0.5 px on average): "
          f"{'holds' if ok else 'fails'}")

    views = [faces.detection_view(img)[0] for img in images]
    rates = {"tensorflow": [], "openvino": []}
    for _ in range(3):  # in turns, so a change in the machine's load hits both alike
        rates["tensorflow"].append(rate(tf_finder, views))
        rates["openvino"].append(rate(ov_finder, views))
    tf_rate, ov_rate = max(rates["tensorflow"]), max(rates["openvino"])
    print(f"\nthe finder alone on {len(views)} views in memory, batches of {faces.DETECT_BATCH} "
          f"(best of 3 rounds, in turns; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
          f"CPUs):\n  MTCNN on TensorFlow {tf_rate:8.1f} crops/s   1.00\n"
          f"  MTCNN on OpenVINO   {ov_rate:8.1f} crops/s {ov_rate / tf_rate:6.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
