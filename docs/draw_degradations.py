"""Draw docs/degradations.png: one face as it is and under each kind of degradation.

    python docs/draw_degradations.py FACE.jpg docs/degradations.png

The face in the README's copy is matplotlib's public-domain portrait of Grace Hopper
(`matplotlib.cbook.get_sample_data("grace_hopper.jpg")`).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import ImageOps  # noqa: E402

import keras  # noqa: E402

from facegender.data import augment  # noqa: E402
from facegender.data import decoding  # noqa: E402
from facegender.drawing import plots  # noqa: E402


def draw(image_path, out_path, size=224, seed=0):
    photo, _ = decoding.open_rgb(image_path, size)
    # A centred square a little above the middle, where a portrait's face is, not a squeeze.
    image = np.asarray(ImageOps.fit(photo, (size, size), centering=(0.5, 0.35)), np.float32)
    batch = np.repeat(image[None], len(augment.KINDS) + 1, axis=0)
    kinds = np.arange(-1, len(augment.KINDS))
    out = keras.ops.convert_to_numpy(augment.degrade(batch, kinds, [seed, 0])).astype(np.uint8)
    plots.save(plots.image_row_figure(out, ("original",) + augment.KINDS), out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python docs/draw_degradations.py FACE_IMAGE OUT.png")
    draw(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
