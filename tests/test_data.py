import os

import numpy as np
import pytest
from PIL import Image

from facegender.data import decoding, listing, splits
from facegender.core.common import DataError
from facegender.data import pipeline
from conftest import make_image_folder


def test_class_folders_match_any_letter_case(tmp_path):
    make_image_folder(str(tmp_path), per_class=2, names=("FEMALE", "Male"))
    dirs = listing.find_class_dirs(str(tmp_path))
    assert os.path.basename(dirs["female"]) == "FEMALE"
    assert os.path.basename(dirs["male"]) == "Male"
    paths, labels = listing.list_labeled_images(str(tmp_path))
    assert list(labels) == [0, 0, 1, 1]


def test_missing_class_folder_is_named(tmp_path):
    make_image_folder(str(tmp_path), per_class=2, names=("female", "other"))
    with pytest.raises(DataError, match=r"male: class folder missing"):
        listing.find_class_dirs(str(tmp_path))


def test_empty_class_folder_is_named(tmp_path):
    make_image_folder(str(tmp_path), per_class=2)
    for name in os.listdir(tmp_path / "male"):
        os.remove(tmp_path / "male" / name)
    with pytest.raises(DataError, match=r"male: class folder holds no images"):
        listing.list_labeled_images(str(tmp_path))


def test_missing_and_file_data_paths_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        listing.find_class_dirs(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        listing.find_class_dirs(str(tmp_path / "file.txt"))


def test_image_listing_by_extension_recursive_skipping_hidden(tmp_path):
    img = Image.new("RGB", (8, 8))
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden_dir").mkdir()
    for name in ["a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.gif", "f.webp", "sub/g.jpg",
                 "sub/deeper/h.PNG", ".i.jpg", ".hidden_dir/j.jpg"]:
        img.save(tmp_path / name, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(
            name.rsplit(".", 1)[1].lower(), name.rsplit(".", 1)[1].upper()))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "Thumbs.db").write_bytes(b"\0")
    found = [os.path.relpath(p, tmp_path) for p in listing.list_image_files(str(tmp_path))]
    assert sorted(found) == sorted(["a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.gif", "f.webp",
                                    os.path.join("sub", "g.jpg"),
                                    os.path.join("sub", "deeper", "h.PNG")])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_load_image_gives_rgb_at_the_requested_size(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    img.save(path)
    arr = decoding.load_image(str(path), 24)
    assert arr.shape == (24, 24, 3) and arr.dtype == np.uint8
    # The colour the mode keeps (grey for L, the palette's nearest for P), within JPEG's loss
    # for CMYK: not a blank or channel-swapped image.
    expected = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    assert np.abs(arr.reshape(-1, 3).mean(axis=0) - expected).max() <= 6, (arr[0, 0], expected)


def test_load_image_scales_16_bit_greyscale_instead_of_clipping(tmp_path):
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(tmp_path / "deep.png")
    arr = decoding.load_image(str(tmp_path / "deep.png"), 24)
    assert arr.shape == (24, 24, 3)
    assert abs(int(arr.mean()) - 40000 // 256) <= 1


def test_load_image_takes_the_first_frame_of_an_animation(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    arr = decoding.load_image(str(tmp_path / "anim.gif"), 16)
    assert arr[..., 0].mean() > 200 and arr[..., 2].mean() < 50


def test_load_image_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif)
    arr = decoding.load_image(str(tmp_path / "rot.jpg"), 20).mean(axis=2)
    # Upright, the white half is on top.
    assert arr[:8].mean() > 200 and arr[-8:].mean() < 60


def test_reader_reports_an_undecodable_file_by_name_and_keeps_going(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (10, 10), (10, 200, 10)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a jpeg")
    reader = decoding.ImageReader(16)
    image, ok = reader(str(good))
    assert image.shape == (16, 16, 3) and ok
    image, ok = reader(str(bad))
    assert image.shape == (16, 16, 3) and not ok and not image.any()
    assert list(reader.skipped) == [str(bad)]
    # In training the bad file gets zero weight, so it never reaches the loss.
    ds = pipeline.make_train_dataset([str(good), str(bad)], [0, 1], reader, batch_size=2,
                                 oversample=0, augment=False, shuffle=False)
    _, labels, weights = next(iter(ds))
    assert list(weights.numpy()) == [1.0, 0.0]


def test_training_reads_a_file_whose_name_is_not_utf8(tmp_path):
    # Latin-1 bytes in a name: a lone surrogate once decoded, which TensorFlow cannot hold.
    odd = os.path.join(tmp_path, os.fsdecode(b"caf\xe9.png"))
    Image.new("RGB", (10, 10), (200, 10, 10)).save(odd)
    reader = decoding.ImageReader(8)
    ds = pipeline.make_train_dataset([odd], [0], reader, batch_size=1, oversample=0,
                                     augment=False, shuffle=False)
    images, _, weights = next(iter(ds))
    assert list(weights.numpy()) == [1.0] and not reader.skipped
    assert np.allclose(images.numpy()[0], (200, 10, 10), atol=2)


@pytest.mark.parametrize("ratio,expected_minority", [(1.0, 30), (0.5, 15), (0.0, 7), (0.1, 7)])
def test_oversampling_ratios(ratio, expected_minority):
    labels = np.array([0] * 7 + [1] * 30)
    index = splits.oversample_indices(labels, ratio, seed=3)
    counts = np.bincount(labels[index])
    assert counts[1] == 30 and counts[0] == expected_minority
    # Every original image stays, and copies are spread evenly (counts differ by at most one).
    per_image = np.bincount(index[labels[index] == 0], minlength=7)[:7]
    assert per_image.min() >= 1 and per_image.max() - per_image.min() <= 1


def test_oversampling_works_when_the_minority_is_male():
    labels = np.array([0] * 9 + [1] * 4)
    counts = np.bincount(labels[splits.oversample_indices(labels, 1.0)])
    assert list(counts) == [9, 9]


def test_train_dataset_balances_weights_and_augments(tmp_path):
    make_image_folder(str(tmp_path), per_class=6)
    paths, labels = listing.list_labeled_images(str(tmp_path))
    paths, labels = paths[:8], labels[:8]  # 6 female, 2 male
    reader = decoding.ImageReader(32)
    ds = pipeline.make_train_dataset(paths, labels, reader, batch_size=4, oversample=1.0,
                                 augment=True, class_weights={0: 1.0, 1: 0.9})
    seen = [(y, w) for _, ys, ws in ds for y, w in zip(ys.numpy(), ws.numpy())]
    assert len(seen) == 12
    assert sum(1 for y, _ in seen if y == 1) == 6
    assert all(w == pytest.approx(0.9 if y == 1 else 1.0) for y, w in seen)
    images = next(iter(ds))[0].numpy()
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 255


def test_source_weights_set_the_share_of_each_source(tmp_path):
    # Source 0 holds 30 images, source 1 only 6 (1 male); weighted 1:1 they are drawn about
    # equally often, and each source is balanced by class on its own. The pixel value tells
    # the source apart in the batches.
    paths, labels, sources = [], [], []
    for source, (count, males, value) in enumerate([(30, 15, 10), (6, 1, 240)]):
        for i in range(count):
            path = str(tmp_path / f"s{source}_{i}.png")
            Image.new("RGB", (8, 8), (value,) * 3).save(path)
            paths.append(path)
            labels.append(int(i < males))
            sources.append(source)
    ds = pipeline.make_train_dataset(paths, np.array(labels), decoding.ImageReader(8), batch_size=50,
                                 augment=False, sources=np.array(sources),
                                 source_weights=[1, 1], seed=0)
    images, y, _ = (np.concatenate(parts) for parts in zip(*[
        (x.numpy(), ys.numpy(), ws.numpy()) for x, ys, ws in ds.take(40)]))
    from_1 = images.reshape(len(images), -1).mean(axis=1) > 128
    assert 0.45 < from_1.mean() < 0.55
    assert 0.4 < y[from_1].mean() < 0.6  # 1 male in 6, oversampled to half


def test_train_dataset_with_source_weights_repeats_and_decodes(tmp_path):
    make_image_folder(str(tmp_path / "a"), per_class=4, seed=1)
    make_image_folder(str(tmp_path / "b"), per_class=4, seed=2)
    pa, ya = listing.list_labeled_images(str(tmp_path / "a"))
    pb, yb = listing.list_labeled_images(str(tmp_path / "b"))
    reader = decoding.ImageReader(32)
    ds = pipeline.make_train_dataset(pa + pb, np.concatenate([ya, yb]), reader, batch_size=4,
                                 sources=np.array([0] * 8 + [1] * 8), source_weights=[3, 1],
                                 degrade=0.5, seed=0)
    batches = list(ds.take(10))  # more images than the two sources hold: it repeats
    assert len(batches) == 10
    images = batches[0][0].numpy()
    assert images.shape == (4, 32, 32, 3) and 0 <= images.min() and images.max() <= 255


def test_find_sources_takes_folders_and_folders_of_sources(tmp_path):
    make_image_folder(str(tmp_path / "one"), per_class=1)
    make_image_folder(str(tmp_path / "many" / "x" / "dev"), per_class=1)
    make_image_folder(str(tmp_path / "many" / "x" / "train"), per_class=1)
    make_image_folder(str(tmp_path / "many" / "y"), per_class=1)
    os.makedirs(tmp_path / "many" / "empty")
    found = listing.find_sources([str(tmp_path / "one"), str(tmp_path / "many")])
    assert [folder for _, folder in found] == [
        str(tmp_path / "one"), str(tmp_path / "many" / "x" / "dev"), str(tmp_path / "many" / "y")]
    assert len({name for name, _ in found}) == 3
    with pytest.raises(DataError, match="neither female/ nor male/"):
        listing.find_sources([str(tmp_path / "many" / "empty")])
