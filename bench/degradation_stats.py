"""How facecom_distorted's degradations change their photos, measured against the clean originals:
python bench/degradation_stats.py DISTORTED_DIR CLEAN_DIR

DISTORTED_DIR holds female/ and male/ with files named NAME_KIND.jpg (facecom_distorted/dev),
CLEAN_DIR the same people's NAME.jpg (facecom/dev). For each kind, and apart for FACECOM's two
kinds of photo (studio portraits, whose names start with a digit, and the others), prints the
median over its photos of: the mean brightness against the original's, the standard deviation
of the difference, and the share of salt-and-pepper pixels (grey level more than 60 from the
median of its 3x3 neighbourhood; a clean photo has next to none). This is what augment.py's
degradations are matched to.
"""

import os
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import median_filter

IMPULSE_LEVELS = 60


def grey(path, size=None):
    image = Image.open(path).convert("L")
    return np.asarray(image.resize(size) if size else image, np.float32)


def compare(degraded_path, clean_path):
    """(brightness ratio, standard deviation of the difference, salt-and-pepper share)."""
    a = grey(degraded_path)
    b = grey(clean_path, a.shape[::-1])
    impulses = np.abs(a - median_filter(a, 3)) > IMPULSE_LEVELS
    return a.mean() / max(b.mean(), 1.0), float((a - b).std()), float(impulses.mean())


def main(distorted_dir, clean_dir):
    stats = {}  # (kind, photo type) -> rows of compare()
    for cls in ("female", "male"):
        for name in sorted(os.listdir(os.path.join(distorted_dir, cls))):
            stem, ext = os.path.splitext(name)
            if "_" not in stem:
                continue
            original, kind = stem.rsplit("_", 1)
            clean = os.path.join(clean_dir, cls, original + ext)
            if not os.path.exists(clean):
                continue
            kind_of_photo = "studio" if original[:1].isdigit() else "other"
            stats.setdefault((kind, kind_of_photo), []).append(
                compare(os.path.join(distorted_dir, cls, name), clean))
    print(f"{'kind':<10} {'photos':<8} {'n':>4} {'brightness':>10} {'diff std':>9} "
          f"{'salt-and-pepper':>16}")
    for (kind, kind_of_photo), rows in sorted(stats.items()):
        ratio, spread, impulses = np.median(np.array(rows), axis=0)
        print(f"{kind:<10} {kind_of_photo:<8} {len(rows):>4} {ratio:>10.2f} {spread:>9.1f} "
              f"{impulses:>16.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[0])
    main(*sys.argv[1:])
