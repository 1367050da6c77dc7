"""What a labelling run reads: the image and video files its paths name, and a photo decoded
upright for finding faces (photo_faces.py); every engine lists and decodes them alike."""

import os

from PIL import Image

from facegender.core.common import DataError
from facegender.data import decoding, listing
from facegender.faces import finder as faces_lib

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts")
# Photos are decoded at most this large for detection: the finder is slow on 20-megapixel
# photos, and a face crop is shrunk to the model's input size anyway.
MAX_PHOTO_SIDE = faces_lib.PHOTO_SIDE


def is_video(path):
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def list_video_files(folder):
    """Video files under `folder` (recursive, hidden ones skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and is_video(f)]
    return found


def collect_inputs(paths):
    """(image files, video files) named by `paths`: a file by its extension (an unknown one is
    tried as an image), a folder searched recursively for both; each once."""
    images, videos = [], []
    for path in paths:
        if os.path.isdir(path):
            images += listing.list_image_files(path)
            videos += list_video_files(path)
        elif os.path.isfile(path):
            (videos if is_video(path) else images).append(path)
        else:
            raise DataError(f"{path}: no such file or folder; pass image or video files or "
                            "folders")
    images, videos = list(dict.fromkeys(images)), list(dict.fromkeys(videos))
    if not images and not videos:
        raise DataError(f"{', '.join(paths)}: no images found ({', '.join(listing.IMAGE_EXTENSIONS)}"
                        f") and no videos ({', '.join(VIDEO_EXTENSIONS)}); check the path")
    return images, videos



def load_photo(path, max_side=MAX_PHOTO_SIDE):
    """Decode a whole photo, upright, RGB, at most `max_side` pixels on its long side.

    Returns (PIL image, scale): multiply a box in the returned image by scale to get it in
    pixels of the original (upright) photo.
    """
    img, original = decoding.open_rgb(path, max_side)
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img, original / max(img.size)
