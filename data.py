"""Reading face images and feeding them to training, where the project's first layout had it:
a facade over the package's real code (the package never imports this file).

- listing the class folders: `facegender.data.listing`; decoding the files:
  `facegender.data.decoding` (neither imports TensorFlow); how often each image is drawn:
  `facegender.data.splits`;
- the training pipeline and its augmentation: `facegender.data.pipeline` and
  `facegender.data.augment` (TensorFlow; imported only when one of their names is used, so
  `import data` stays light).
"""

import importlib

from facegender.data.decoding import ImageReader, load_image, main_faces
from facegender.data.listing import (IMAGE_EXTENSIONS, find_class_dirs, find_sources,
                                     list_image_files, list_labeled_images)
from facegender.data.splits import oversample_indices

# The TensorFlow names, loaded on first use (PEP 562).
_LAZY = {"make_train_dataset": "facegender.data.pipeline",
         "make_augmentation": "facegender.data.augment"}

__all__ = ["IMAGE_EXTENSIONS", "ImageReader", "find_class_dirs", "find_sources",
           "list_image_files", "list_labeled_images", "load_image", "main_faces",
           "oversample_indices", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
