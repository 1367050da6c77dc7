"""The training-data plan: which images train, how often each is drawn, which validate.

Reads the --data_path / --val_path folders (and their attributes.csv), holds out a validation
split where there is no validation folder, groups the images by source and by --balance_by
value (age band), and gives each group its share of the draws and each validation group its
name, so that the worst group picks the epoch and the threshold; within a group, the minority
class is repeated up to the majority's count (oversample_indices). train_model.py asks it once
and wires the answer into the pipeline (pipeline.make_train_dataset) and the callbacks.
"""

import os
from typing import NamedTuple

import numpy as np

from facegender.data import attributes, decoding, listing
from facegender.core.common import CLASS_NAMES, DataError


class Images(NamedTuple):
    """Labelled images: `sources[i]` is the index of the data folder image i came from, and
    `strata[i]` its values of the --balance_by attributes ("" where its folder has none)."""
    paths: list
    labels: np.ndarray
    sources: np.ndarray
    strata: list


class Split(NamedTuple):
    train: Images
    val: Images
    how: str  # where the validation images came from, in words
    val_names: list  # a short name per validation source


def image_strata(folder, paths, columns):
    """Each image's values of the attribute `columns` that the folder's attributes.csv has,
    joined ("60+", or "60+ asian"); "" for every image when it has none of them."""
    table, present = attributes.read_attributes(folder)
    used = [c for c in columns if c in present]
    if not used:
        return [""] * len(paths)
    return [" ".join(values) for values in
            zip(*(attributes.attribute_values(table, paths, c) for c in used))]


def collect(folders, limit=None, seed=0, balance_by=()):
    """Pool the labelled images of several class-folder roots as `Images`. With `limit`, each
    folder gives at most that many images, a random subset stratified by class and by the
    `balance_by` attributes (by class alone where some group is too small to split)."""
    from sklearn.model_selection import train_test_split

    paths, labels, sources, strata = [], [], [], []
    for k, folder in enumerate(folders):
        p, y = listing.list_labeled_images(folder)
        s = image_strata(folder, p, balance_by)
        if limit and len(p) > limit:
            keys = [f"{label} {value}" for label, value in zip(y, s)]
            # Every group needs an image on both sides of the cut to stratify by it.
            counts = np.unique(keys, return_counts=True)[1]
            fits = min(counts) >= 2 and len(counts) <= min(limit, len(p) - limit)
            by = keys if fits else y
            p, _, y, _, s, _ = train_test_split(p, y, s, train_size=limit, stratify=by,
                                                random_state=seed)
        paths += list(p)
        labels.append(np.asarray(y))
        sources.append(np.full(len(p), k))
        strata += list(s)
    return Images(paths, np.concatenate(labels), np.concatenate(sources), strata)


def strata_groups(images):
    """(group index per image, the (source, --balance_by value) pair of each group), groups
    in folder order, then age order."""
    pairs = list(zip(images.sources.tolist(), images.strata))
    keys = sorted(set(pairs), key=lambda key: (key[0], attributes.band_order(key[1])))
    index = {key: i for i, key in enumerate(keys)}
    return np.array([index[key] for key in pairs], dtype=np.int64), keys


def group_name(names, key):
    source, value = key
    return f"{names[source]} {value}".strip()


def split_by_strata(images, names):
    """Validation groups: each folder's images split by their --balance_by values, so that
    "utkface/dev 60+" is scored on its own. Returns (images with `sources` re-indexed by
    group, the group names)."""
    groups, keys = strata_groups(images)
    return images._replace(sources=groups), [group_name(names, key) for key in keys]


def split_data(config):
    """Resolve training and validation images from the flags (a `Split`): a training source
    is a --data_path folder, a validation source a validation folder."""
    from sklearn.model_selection import train_test_split

    train_roots, val_roots = [], []
    for root in config.data_path:
        if not os.path.isdir(root):
            raise DataError(f"{root}: no such folder; pass --data_path a folder holding "
                            "female/ and male/ (or train/ and val/)")
        train_roots.append(listing.find_subdir(root, listing.TRAIN_DIR_NAMES) or root)
        val_roots.append(listing.find_subdir(root, listing.VAL_DIR_NAMES))
    train = collect(train_roots, balance_by=config.balance_by)
    for k, name in enumerate(CLASS_NAMES):
        # Minutes into a run is too late to find that a class has no usable image.
        if decoding.first_readable(np.asarray(train.paths)[train.labels == k]) is None:
            raise DataError(f"{' '.join(config.data_path)}: no readable {name} training image; "
                            "every file failed to decode")
    # Folder names, not paths: they go into the sidecar, which ships to other machines.
    if config.val_path or all(val_roots):
        folders = config.val_path or val_roots
        val, names = split_by_strata(
            collect(folders, config.val_limit, config.seed, config.balance_by),
            listing.source_names(folders))
        how = "--val_path" if config.val_path else "validation folder(s)"
        return Split(train, val, f"{how} {', '.join(listing.source_names(folders))}", names)
    paths, labels, sources, strata = train
    if min(np.bincount(labels, minlength=2)) < 2:
        raise DataError(f"{train_roots[0]}: too few images to hold some out for validation; "
                        "add images or pass --val_path")
    # At least one validation image per class, however small the data.
    held_out = max(2, int(round(config.val_split * len(paths))))
    tr_p, va_p, tr_y, va_y, tr_s, va_s, tr_t, va_t = train_test_split(
        paths, labels, sources, strata, test_size=held_out, stratify=labels,
        random_state=config.seed)
    val, names = split_by_strata(Images(va_p, va_y, np.zeros_like(va_s), va_t),
                                 ["validation split"])
    return Split(Images(tr_p, tr_y, tr_s, tr_t), val,
                 f"stratified {config.val_split:.0%} split (seed {config.seed})", names)


def source_weights(config, sources):
    """The per-source sampling shares to draw training images with, or None to draw from the
    pooled images as they are (one source, or no --source_weights and no --epoch_images)."""
    if config.source_weights:
        return config.source_weights
    if config.epoch_images:
        return np.bincount(sources).tolist()  # in proportion to the sources' sizes
    return None


def draw_groups(config, train):
    """The groups to draw training images from and each group's share of the draws:
    (group index per image, shares), or (sources, None) to draw from the pooled images as they
    are.

    A group is a data folder, or with --balance_by a (folder, attribute value) pair. The
    folders that carry the attribute (UTKFace's and All-Age-Faces' ages) pool their shares,
    split them equally over the values (age bands) found in any of them, and each value's
    share over the folders that have it, in proportion to their images of it; each group is
    class-balanced on its own. So every (class, age band) group is drawn as often as any other
    across all of those folders (women over 60 as often as women in their 20s), whichever
    folder holds them. A folder without the attribute keeps its own share and its own age mix.
    """
    shares = source_weights(config, train.sources)
    if not config.balance_by or not any(train.strata):
        return train.sources, shares
    if shares is None:
        shares = np.bincount(train.sources).tolist()
    groups, keys = strata_groups(train)
    sizes = np.bincount(groups, minlength=len(keys))
    balanced = {source for source, value in keys if value}  # folders that carry the attribute
    pooled = sum(shares[source] for source in balanced)
    values = sorted({value for source, value in keys if source in balanced})
    per_value = {v: sum(sizes[g] for g, (s, value) in enumerate(keys)
                        if value == v and s in balanced) for v in values}
    total = float(np.sum(shares))
    return groups, [
        (pooled / len(values) * sizes[g] / per_value[value] if source in balanced
         else shares[source]) / total
        for g, (source, value) in enumerate(keys)]


def epoch_steps(config, labels, shares, batch_size):
    """Batches per epoch when the training set repeats (None: one pass over it)."""
    if shares is None:
        return None
    images = config.epoch_images or len(oversample_indices(labels, config.oversample))
    return max(1, -(-images // batch_size))


def oversample_indices(labels, ratio=1.0, seed=0):
    """Indices into `labels` with the minority class repeated up to `ratio` x the majority count.

    `ratio=1.0` balances the classes; `ratio=0` (or anything that would shrink the minority)
    returns every index once. Whole copies come first and the remainder is drawn without
    replacement, so every minority image appears a near-equal number of times.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    target = int(round(ratio * counts.max()))
    indices = np.arange(len(labels))
    extra = target - counts[minority]
    if ratio <= 0 or extra <= 0 or counts[minority] == 0:
        return indices
    rng = np.random.default_rng(seed)
    minority_idx = indices[labels == minority]
    copies, rest = divmod(extra, len(minority_idx))
    added = np.concatenate([np.tile(minority_idx, copies),
                            rng.choice(minority_idx, size=rest, replace=False)])
    return np.concatenate([indices, added])
