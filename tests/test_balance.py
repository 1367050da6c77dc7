"""--balance_by: every (class, age band) group of a folder is drawn at the asked rate, and each
age band is a validation group of its own."""

import os

import numpy as np
from PIL import Image

from facegender.data import decoding
from facegender.data import pipeline
from facegender.data import splits
from facegender.cli import train as train_model

# (class, age) -> how many images: deliberately lopsided, as UTKFace is (few old women).
GROUPS = {("female", 25): 30, ("female", 65): 3, ("male", 25): 8, ("male", 65): 12}


def make_aged_folder(root):
    """root/{train,dev}/{female,male}/ with images whose pixel value says their (class, age)
    group, and an attributes.csv with their ages; two train images have no row (unknown)."""
    for split in ("train", "dev"):
        rows = ["path,age,origin"]
        for g, ((name, age), n) in enumerate(GROUPS.items()):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                rel = f"{name}/{age}_{i:02d}.png"
                Image.fromarray(np.full((8, 8, 3), 40 * (g + 1), np.uint8)).save(
                    os.path.join(root, split, rel))
                if not (split == "train" and name == "male" and age == 25 and i < 2):
                    rows.append(f"{rel},{age},white")
        with open(os.path.join(root, split, "attributes.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return root


def test_each_class_and_age_band_is_drawn_at_the_asked_rate(tmp_path):
    root = make_aged_folder(str(tmp_path / "faces"))
    args = train_model.parse_args(["--data_path", root, "--balance_by", "age",
                                   "--epoch_images", "64"])
    train = splits.split_data(args).train
    groups, shares = splits.draw_groups(args, train)
    # Bands 20s, 60+ and the two images without a row: three groups of one folder.
    assert sorted(set(train.strata)) == ["20s", "60+", "unknown"]
    assert np.allclose(shares, 1 / 3)

    ds = pipeline.make_train_dataset(train.paths, train.labels, decoding.ImageReader(8), batch_size=100,
                                 augment=False, seed=3, sources=groups, source_weights=shares)
    n_draws = 3000
    pixels, labels = [], []
    for images, y, _ in ds.take(n_draws // 100):
        pixels.append(images.numpy()[:, 0, 0, 0])
        labels.append(y.numpy())
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    drawn = {key: np.mean(pixels == 40 * (g + 1)) for g, key in enumerate(GROUPS)}
    # Each age band gets a third of the draws, half of it per class, however few images it has
    # (3 women over 60 against 30 in their 20s); the "unknown" third is the two male 25s
    # without a row, oversampled against no female: all male.
    expected = {("female", 25): 1 / 6, ("female", 65): 1 / 6, ("male", 25): 1 / 6 + 1 / 3,
                ("male", 65): 1 / 6}
    for key, rate in expected.items():
        sigma = np.sqrt(rate * (1 - rate) / n_draws)
        assert abs(drawn[key] - rate) < 4 * sigma, (key, drawn[key], rate)
    assert abs(np.mean(labels) - 2 / 3) < 0.05


def test_without_balance_by_images_are_drawn_as_they_are(tmp_path):
    root = make_aged_folder(str(tmp_path / "faces"))
    args = train_model.parse_args(["--data_path", root])
    train = splits.split_data(args).train
    groups, shares = splits.draw_groups(args, train)
    assert shares is None and np.array_equal(groups, train.sources)


def test_age_bands_are_validation_groups(tmp_path):
    root = make_aged_folder(str(tmp_path / "faces"))
    args = train_model.parse_args(["--data_path", root, "--balance_by", "age"])
    split = splits.split_data(args)
    assert split.val_names == ["faces/dev 20s", "faces/dev 60+"]
    counts = np.bincount(split.val.sources)
    assert counts.tolist() == [30 + 8, 3 + 12]


def test_validation_subset_keeps_every_band(tmp_path):
    # --val_limit draws a subset stratified by class and band: the 3 women over 60 of 53
    # images are not lost to a limit of 20.
    root = make_aged_folder(str(tmp_path / "faces"))
    args = train_model.parse_args(["--data_path", root, "--balance_by", "age",
                                   "--val_limit", "20"])
    split = splits.split_data(args)
    val = split.val
    old_women = [s == "60+" and y == 0 for s, y in zip(val.strata, val.labels)]
    assert len(val.paths) == 20 and any(old_women)


def test_validation_limit_near_the_folder_size_falls_back_to_class_strata(tmp_path):
    # 51 of 53 images leaves 2 out: too few to hold one of each of the 4 (class, band) groups,
    # so the subset is stratified by class alone instead of failing.
    root = make_aged_folder(str(tmp_path / "faces"))
    args = train_model.parse_args(["--data_path", root, "--balance_by", "age",
                                   "--val_limit", "51"])
    assert len(splits.split_data(args).val.paths) == 51


def test_age_bands_are_balanced_across_the_folders_that_carry_ages(tmp_path):
    # Two aged folders: the first has only people in their 20s, the second both bands. Every
    # band gets the same share of the pooled draws, split over the folders by their images of
    # it; a folder without ages keeps its own share.
    young = tmp_path / "young"
    for name in ("female", "male"):
        os.makedirs(young / "train" / name)
        for i in range(6):
            Image.new("RGB", (8, 8)).save(young / "train" / name / f"{i}.png")
    (young / "train" / "attributes.csv").write_text(
        "path,age\n" + "".join(f"{n}/{i}.png,23\n" for n in ("female", "male") for i in range(6)))
    mixed = make_aged_folder(str(tmp_path / "mixed"))
    plain = str(tmp_path / "plain")
    os.makedirs(plain)
    from conftest import make_image_folder
    make_image_folder(plain, per_class=3)
    args = train_model.parse_args(["--data_path", str(young), mixed, plain, "--balance_by",
                                   "age", "--source_weights", "1", "1", "2",
                                   "--val_path", plain])
    train = splits.split_data(args).train
    groups, shares = splits.draw_groups(args, train)
    _, keys = splits.strata_groups(train)
    share = dict(zip(keys, shares))
    # The aged folders pool half the draws over three bands (20s, 60+, unknown): 1/6 each.
    twenties = share[(0, "20s")] + share[(1, "20s")]
    assert np.isclose(twenties, 1 / 6) and np.isclose(share[(1, "60+")], 1 / 6)
    assert np.isclose(share[(1, "unknown")], 1 / 6)
    # The 20s share follows the images: 12 in the young folder, 36 in the mixed one.
    assert np.isclose(share[(0, "20s")] / share[(1, "20s")], 12 / 36)
    assert np.isclose(share[(2, "")], 1 / 2) and np.isclose(sum(shares), 1)
