"""Listing labelled images: the class folders of a data folder, the image files under them,
and the sources (data folders) a command line names.

A data folder holds one sub-folder per class, `female/` and `male/` (any letter case).
Class index 0 is female and 1 is male, so the model's single sigmoid output is P(male).
"""

import os

import numpy as np

from facegender.core.common import CLASS_NAMES, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Sub-folder names that hold a ready-made split inside a data folder.
TRAIN_DIR_NAMES = ("train",)
VAL_DIR_NAMES = ("val", "validation", "dev")


def find_subdir(root, names):
    """Return the first sub-folder of `root` whose name matches one of `names` (any case)."""
    try:
        entries = {e.name.lower(): e.path for e in os.scandir(root) if e.is_dir()}
    except OSError:
        return None
    for name in names:
        if name in entries:
            return entries[name]
    return None


def check_folder(root):
    """Raise a DataError naming `root` unless it is a readable folder."""
    hint = "pass a folder that holds female/ and male/"
    if not os.path.exists(root):
        raise DataError(f"{root}: no such folder; {hint}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: is a file, not a folder; {hint}")
    try:
        os.scandir(root).close()
    except OSError as err:
        raise DataError(f"{root}: cannot be read ({err.strerror}); check its permissions") from None


def find_class_dirs(root, required=CLASS_NAMES):
    """Map each class name to its folder inside `root`, matching names in any letter case.

    A class in `required` that has no folder is an error; evaluation passes `required=()` to
    take whichever classes are there (at least one).
    """
    check_folder(root)
    class_dirs = {}
    for name in CLASS_NAMES:
        path = find_subdir(root, [name])
        if path is not None:
            class_dirs[name] = path
        elif name in required:
            raise DataError(f"{os.path.join(root, name)}: class folder missing; "
                            f"put the {name} images in it (expected female/ and male/)")
    if not class_dirs:
        raise DataError(f"{root}: holds neither female/ nor male/; {', '.join(CLASS_NAMES)} "
                        "sub-folders are expected")
    return class_dirs


def list_image_files(folder, exclude=()):
    """All image files under `folder` (recursively), by extension, sorted.

    Hidden files and folders are skipped, and so are the folders in `exclude` (an output folder
    inside the data must not be read back as data). Symbolic links are followed, each real
    folder once, so a link loop ends.
    """
    skip = {os.path.realpath(p) for p in exclude}
    seen, found = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def list_labeled_images(root, required=CLASS_NAMES, exclude=()):
    """Return (paths, labels) for every image in the class folders of `root`.

    Labels are 0 for female and 1 for male. A class in `required` whose folder is missing or
    holds no images is an error.
    """
    paths, labels = [], []
    for name, folder in find_class_dirs(root, required).items():
        files = list_image_files(folder, exclude)
        if not files and name in required:
            raise DataError(f"{folder}: class folder holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add some or fix --data_path")
        paths += files
        labels += [CLASS_NAMES.index(name)] * len(files)
    if not paths:
        raise DataError(f"{root}: the class folders hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add some or fix --data_path")
    return paths, np.array(labels, dtype=np.int64)


def source_names(folders):
    """Short, distinct names for data folders: the last path parts that tell them apart (a
    split folder keeps its parent's name too: "celeba/dev", not "dev")."""
    parts = [os.path.abspath(f).rstrip(os.sep).split(os.sep) for f in folders]
    splits = TRAIN_DIR_NAMES + VAL_DIR_NAMES
    for extra in range(max(map(len, parts))):
        names = ["/".join(p[-(1 + extra + (p[-1].lower() in splits)):]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.abspath(f) for f in folders]


def has_class_dirs(root):
    return any(find_subdir(root, [name]) for name in CLASS_NAMES)


def find_sources(roots):
    """The labelled folders to evaluate, as (name, folder) pairs.

    Each root that holds female/ or male/ is one source. A root that holds neither is taken as
    a folder of sources: each sub-folder holding them is one, and so is each sub-folder whose
    val/ or dev/ split holds them (the part not trained on).
    """
    found = []
    for root in roots:
        check_folder(root)
        if has_class_dirs(root):
            found.append(root)
            continue
        inside = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            split = find_subdir(entry.path, VAL_DIR_NAMES)
            if has_class_dirs(entry.path):
                inside.append(entry.path)
            elif split and has_class_dirs(split):
                inside.append(split)
        if not inside:
            raise DataError(f"{root}: holds neither female/ nor male/, nor sub-folders that do; "
                            "pass a folder with female/ and male/ (or a folder of such folders)")
        found += inside
    return list(zip(source_names(found), found))
