import csv
import os
import sys

import keras
import numpy as np
import pytest

from facegender.data import decoding, listing
from facegender.runtime import conversion, inference
from facegender.model import network as model_lib
from facegender.cli import predict
from facegender.cli import evaluate as test_script
from conftest import IMAGE_SIZE, face_like_image


def small_model(size=32):
    """A small convolutional net whose scores spread widely: converts in a second."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Rescaling(1 / 127.5, offset=-1.0),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=10.0)),
    ])


def test_openvino_and_keras_give_the_same_scores(trained, tmp_path):
    model = model_lib.load_model(trained["model"])
    paths, _ = listing.list_labeled_images(trained["data"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = paths[:7] + [str(broken)] + paths[7:]  # batches of 5: the broken file mid-batch
    results = {}
    for backend in ("keras", "openvino"):
        runner = inference.make_runner(model, backend, model_path=trained["model"])
        assert runner.name == ("keras" if backend == "keras" else "openvino f32")
        results[backend] = inference.score_paths(runner, paths, IMAGE_SIZE, 5, 0)
    (keras_scores, keras_bad), (ov_scores, ov_bad) = results["keras"], results["openvino"]
    assert list(keras_bad) == list(ov_bad) == [str(broken)]
    assert np.isnan(keras_scores[7]) and np.isnan(ov_scores[7])
    good = ~np.isnan(keras_scores)
    assert good.sum() == len(paths) - 1
    assert np.ptp(keras_scores[good]) > 1e-3  # the comparison is not vacuous
    # float32 on both sides; only the order of the sums differs, which moves a score by a few
    # 1e-5 at most here (1.9e-5 seen under load); a bf16 run moves them by 1e-3 to 1e-1.
    np.testing.assert_allclose(ov_scores[good], keras_scores[good], rtol=0, atol=5e-5)
    # And the scores are the model's own on the decoded images.
    images = np.stack([decoding.load_image(p, IMAGE_SIZE) for p in np.asarray(paths)[good]])
    np.testing.assert_allclose(keras_scores[good], model.predict(
        images.astype("float32"), verbose=0)[:, 0], rtol=0, atol=1e-5)


def test_openvino_cuts_batches_into_fixed_size_requests_and_keeps_their_order():
    model = small_model()
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32") for n in (10, 3, 6, 1)]
    expected = [model.predict(b, verbose=0) for b in batches]
    assert np.ptp(np.concatenate(expected)) > 1e-3  # the comparison is not vacuous
    for request_batch in (3, None):  # 10 = 3+3+3+1 at a fixed shape and an open one; whole
        runner = inference.make_runner(model, "openvino", request_batch=request_batch)
        out = list(runner.map((k, b) for k, b in enumerate(batches)))
        # The fixed-shape model is compiled once a batch fills a request, never without one.
        assert len(runner.made()) == (2 if request_batch else 1)
        assert [tag for tag, _ in out] == [0, 1, 2, 3]
        for (_, got), want in zip(out, expected):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
    # A photo or two never fill a request: the fixed-shape model is not compiled at all.
    runner = inference.make_runner(model, "openvino", request_batch=3)
    list(runner.map([(0, batches[3])]))
    assert len(runner.made()) == 1


def test_the_converted_model_is_cached_by_model_file(tmp_path, monkeypatch):
    import openvino as ov
    model = small_model()
    path = str(tmp_path / "small.h5")
    model_lib.save_model(model, path)
    cache = tmp_path / "cache"
    first = inference.make_runner(model, "openvino", model_path=path, cache_dir=str(cache))
    assert len(os.listdir(cache / "openvino")) == 2  # the .xml and its .bin, nothing partial

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although cached")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    again = inference.make_runner(model, "openvino", model_path=path, cache_dir=str(cache))
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert np.ptp(expected) > 1e-2
    np.testing.assert_allclose(again.predict(images), expected, atol=1e-5)
    np.testing.assert_allclose(first.predict(images), expected, atol=1e-5)


def test_conversion_prints_nothing_when_a_script_was_given_verbose(monkeypatch, capsys):
    # OpenVINO reads sys.argv and prints its settings when it finds "--verbose" there.
    monkeypatch.setattr(sys, "argv", ["test_script.py", "--verbose", "0"])
    runner = inference.make_runner(small_model(), "openvino")
    assert runner.name == "openvino f32"
    assert capsys.readouterr().out == ""


def test_a_changed_model_file_replaces_its_older_conversion(tmp_path):
    model = small_model()
    path, other = str(tmp_path / "small.h5"), str(tmp_path / "other.h5")
    model_lib.save_model(model, path)
    model_lib.save_model(model, other)
    cache = tmp_path / "cache"
    for p in (path, other):
        inference.make_runner(model, "openvino", model_path=p, cache_dir=str(cache))
    before = sorted(os.listdir(cache / "openvino"))
    assert len(before) == 4
    os.utime(path, ns=(0, 10**18))  # the file changed: a new key
    inference.make_runner(model, "openvino", model_path=path, cache_dir=str(cache))
    after = sorted(os.listdir(cache / "openvino"))
    new_key = conversion.model_file_key(path)
    assert after == sorted([f"{new_key}.xml", f"{new_key}.bin",
                            *[f for f in before if f.startswith(conversion.model_file_key(other))]])


def test_a_model_openvino_cannot_convert_runs_on_keras_with_one_line(trained, tmp_path,
                                                                     monkeypatch, capsys,
                                                                     caplog):
    import openvino as ov

    def fail(*args, **kwargs):
        raise RuntimeError("Cannot convert operation FancyOp\nlong traceback text")

    monkeypatch.setattr(ov, "convert_model", fail)
    model = small_model()
    runner = inference.make_runner(model, "openvino")
    assert isinstance(runner, inference.KerasRunner)
    # One warning from the library (a script shows it on stderr: checked below).
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "could not convert" in warning.message and "FancyOp" in warning.message
    assert "\n" not in warning.message
    # End to end, on a model file never cached: the run goes on and gives its scores.
    out = tmp_path / "p.csv"
    monkeypatch.setenv("FACEGENDER_CACHE", str(tmp_path / "empty_cache"))
    assert predict.main([trained["data"], "--model_path", trained["model"], "--output", str(out),
                         "--verbose", "0"]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("could not convert") == 1 and "on keras" in printed.out
    assert len(out.read_text().splitlines()) == 25


def test_keras_backend_works_without_openvino(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    assert not conversion.openvino_available()
    rng = np.random.default_rng(0)
    face_like_image(1, rng).save(tmp_path / "a.png")
    for backend in ("keras", "auto"):
        out = tmp_path / f"{backend}.csv"
        assert predict.main([str(tmp_path / "a.png"), "--model_path", trained["model"],
                             "--output", str(out), "--backend", backend, "--verbose", "0"]) == 0
        assert "on keras" in capsys.readouterr().out and out.exists()
    for flags, message in ((["--backend", "openvino"], "pip install openvino"),
                           (["--precision", "bf16"], "not installed here: pip install openvino"),
                           (["--backend", "keras", "--precision", "bf16"], "Keras runs float32")):
        assert predict.main([str(tmp_path / "a.png"), "--model_path", trained["model"],
                             "--output", str(tmp_path / "x.csv"), "--verbose", "0"] + flags) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0
    assert not (tmp_path / "x.csv").exists()
    # The flags are checked before the model is read: a missing file is not what it reports.
    assert test_script.main(["--data_path", trained["data"], "--model_path", "missing.h5",
                             "--backend", "openvino", "--no_copy", "--verbose", "0",
                             "--output_dir", str(tmp_path / "eval")]) == 2
    assert "pip install openvino" in capsys.readouterr().err


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_is_used_where_the_cpu_has_it_and_a_threshold_keeps_the_labels(has_bf16,
                                                                          monkeypatch, caplog):
    monkeypatch.setattr(conversion, "cpu_has_bf16", lambda core: has_bf16)
    model = small_model()
    # auto, the default: bf16 only with a threshold to recheck near, and said nowhere.
    assert inference.make_runner(model, "openvino").name == "openvino f32"
    assert inference.make_runner(model, "openvino", threshold=0.5).name == (
        "openvino bf16, f32 near the threshold" if has_bf16 else "openvino f32")
    assert inference.make_runner(model, "openvino", "f32", threshold=0.5).name == "openvino f32"
    assert caplog.messages == []
    runner = inference.make_runner(model, "openvino", "bf16")
    assert runner.name == ("openvino bf16" if has_bf16 else "openvino f32")
    assert ("no bfloat16 support" in caplog.text) == (not has_bf16)
    with pytest.raises(ValueError):
        inference.make_runner(model, "onnx")


class Shifted:
    """A stand-in for a bf16 runner: every score of `runner` moved by `shift` in log-odds."""

    name = "shifted"

    def __init__(self, runner, shift):
        self.runner, self.shift = runner, shift

    def map(self, items):
        for tag, output in self.runner.map(items):
            yield tag, 1 / (1 + np.exp(-(inference.logit(output) + self.shift)))


def test_scores_near_the_threshold_are_scored_again_exactly():
    model = small_model()
    rng = np.random.default_rng(1)
    batches = [rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32") for n in (9, 16, 5)]
    exact = [model.predict(b, verbose=0) for b in batches]
    threshold = float(np.median(np.concatenate(exact)))
    # The async OpenVINO runner takes batches ahead of the outputs it gives back.
    fast = Shifted(inference.make_runner(model, "openvino"), 0.3)
    runner = inference.RecheckedRunner(fast, inference.KerasRunner(model), threshold, 0.5)
    out = list(runner.map((k, b) for k, b in enumerate(batches)))
    assert [tag for tag, _ in out] == [0, 1, 2]
    got, exact = np.concatenate([o for _, o in out])[:, 0], np.concatenate(exact)[:, 0]
    shifted = 1 / (1 + np.exp(-(inference.logit(exact) + 0.3)))
    near = np.abs(inference.logit(shifted) - inference.logit(threshold)) < 0.5
    assert 0 < near.sum() < len(near)  # both kinds of score are there
    np.testing.assert_allclose(got[near], exact[near], rtol=0, atol=5e-5)
    np.testing.assert_allclose(got[~near], shifted[~near], rtol=0, atol=5e-5)
    # Shifted alone would flip labels; rechecked, every label is the exact one.
    assert np.any((shifted >= threshold) != (exact >= threshold))
    np.testing.assert_array_equal(got >= threshold, exact >= threshold)


def test_bf16_given_a_threshold_rechecks_near_it_in_float32():
    import openvino as ov
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bfloat16")
    model = small_model()
    runner = inference.make_runner(model, "openvino", "bf16", threshold=0.5)
    assert runner.name == "openvino bf16, f32 near the threshold"
    assert runner.exact.name == "openvino f32"
    images = np.random.default_rng(2).uniform(0, 255, (12, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(runner.predict(images) >= 0.5,
                                  model.predict(images, verbose=0) >= 0.5)


def test_the_default_precision_gives_float32s_labels_on_a_sample(trained, tmp_path):
    rows = {}
    for name, flags in (("default", []), ("f32", ["--precision", "f32"])):
        out = tmp_path / f"{name}.csv"
        assert predict.main([trained["data"], "--model_path", trained["model"], "--output",
                             str(out), "--verbose", "0", "--threshold", "0.5"] + flags) == 0
        rows[name] = {r["path"]: r for r in csv.DictReader(out.open())}
    assert len(rows["f32"]) >= 20 and rows["default"].keys() == rows["f32"].keys()
    assert {p: r["label"] for p, r in rows["default"].items()} == {
        p: r["label"] for p, r in rows["f32"].items()}


def test_decoded_batches_keep_the_file_order_and_report_unreadable_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        path = tmp_path / f"{i:02d}.png"
        face_like_image(i % 2, rng, size=20).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths.insert(12, str(broken))
    reader = decoding.ImageReader(16)
    batches = list(inference.decoded_batches(paths, reader, 5))
    assert [start for start, _, _ in batches] == [0, 5, 10, 15, 20]
    images = np.concatenate([b for _, b, _ in batches])
    readable = np.concatenate([ok for _, _, ok in batches])
    assert list(np.flatnonzero(~readable)) == [12] and list(reader.skipped) == [str(broken)]
    assert not images[12].any()  # a black image holds its place
    good = [p for p in paths if p != str(broken)]
    np.testing.assert_array_equal(images[readable], np.stack([decoding.load_image(p, 16)
                                                              for p in good]))


# ---------------------------------------------------------------------------
# Test-time flip averaging

def mirrored_pair(tmp_path, size=32, n=3):
    """n random images at the model's input size (so decoding does not resize) and their
    horizontal mirrors, as files: ([image paths], [mirror paths])."""
    from PIL import Image
    rng = np.random.default_rng(3)
    images, mirrors = [], []
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for folder, array in ((images, pixels), (mirrors, pixels[:, ::-1])):
            path = str(tmp_path / f"{i}_{len(folder)}_{'m' if folder is mirrors else 'i'}.png")
            Image.fromarray(np.ascontiguousarray(array)).save(path)
            folder.append(path)
    return images, mirrors


@pytest.mark.parametrize("backend", ["keras", "openvino"])
def test_flip_averaging_is_symmetric_and_the_mean_of_both_scores(tmp_path, backend):
    model = small_model()
    images, mirrors = mirrored_pair(tmp_path)
    runner = inference.make_runner(model, backend)
    plain = {p: s for p, s in zip(images + mirrors,
                                  inference.score_paths(runner, images + mirrors, 32, 4, 0)[0])}
    assert max(abs(plain[a] - plain[b]) for a, b in zip(images, mirrors)) > 1e-3  # not vacuous
    tta_runner = inference.make_runner(model, backend, tta=True)
    assert tta_runner.name.endswith("tta (mean with the mirror)")
    for scored in (inference.score_paths(tta_runner, images + mirrors, 32, 4, 0)[0],
                   inference.score_paths(runner, images + mirrors, 32, 4, 0, tta=True)[0],
                   # tta twice is tta once
                   inference.score_paths(tta_runner, images + mirrors, 32, 4, 0, tta=True)[0]):
        got = dict(zip(images + mirrors, scored))
        for a, b in zip(images, mirrors):
            assert got[a] == pytest.approx(got[b], abs=1e-6)
            assert got[a] == pytest.approx((plain[a] + plain[b]) / 2, abs=1e-6)
    crops = np.stack([decoding.load_image(p, 32) for p in images])
    np.testing.assert_allclose(inference.score_images(runner, crops, 2, tta=True),
                               [(plain[a] + plain[b]) / 2 for a, b in zip(images, mirrors)],
                               atol=1e-6)


def test_a_rechecked_bf16_runner_rechecks_the_flip_averaged_score():
    # Averaged first, rechecked after: the label of the mean is the exact one.
    model = small_model()
    rng = np.random.default_rng(4)
    batch = rng.uniform(0, 255, (40, 32, 32, 3)).astype("float32")
    both = np.concatenate([batch, batch[:, :, ::-1]])
    exact = model.predict(both, verbose=0)[:, 0]
    exact = (exact[:40] + exact[40:]) / 2
    threshold = float(np.median(exact))
    fast = Shifted(inference.make_runner(model, "openvino"), 0.3)
    runner = inference.flip_averaged(
        inference.RecheckedRunner(fast, inference.KerasRunner(model), threshold, 0.5))
    assert isinstance(runner.fast, inference.FlipAveraged) and runner.name.endswith("mirror)")
    got = runner.predict(batch)[:, 0]
    np.testing.assert_array_equal(got >= threshold, exact >= threshold)
    near = np.abs(inference.logit(got) - inference.logit(threshold)) < 0.3
    np.testing.assert_allclose(got[near], exact[near], atol=5e-5)


def test_predict_tta_writes_flip_averaged_scores_and_says_so(tmp_path):
    import csv
    model = small_model()
    path = str(tmp_path / "small.h5")
    model_lib.save_model(model, path)
    images, mirrors = mirrored_pair(tmp_path / ".", n=2)
    rows = {}
    for flag in ("--no-tta", "--tta"):
        out = tmp_path / f"{flag}.csv"
        assert predict.main(images + mirrors + ["--model_path", path, "--output", str(out),
                                                "--verbose", "0", flag]) == 0
        with open(out, newline="") as f:
            rows[flag] = {r["path"]: r for r in csv.DictReader(f)}
    assert "tta" not in next(iter(rows["--no-tta"].values()))
    for a, b in zip(images, mirrors):
        assert rows["--tta"][a]["tta"] == "flip"
        assert float(rows["--tta"][a]["p_male"]) == pytest.approx(
            float(rows["--tta"][b]["p_male"]), abs=2e-6)
        mean = (float(rows["--no-tta"][a]["p_male"]) + float(rows["--no-tta"][b]["p_male"])) / 2
        assert float(rows["--tta"][a]["p_male"]) == pytest.approx(mean, abs=2e-6)


@pytest.mark.parametrize("damage", ["truncate the weights", "cut the graph"])
def test_a_damaged_conversion_in_the_cache_is_converted_again_not_used(tmp_path, damage):
    # OpenVINO checks every constant's offset and size against the weights file as it reads
    # the graph, so a torn entry fails to read and is replaced, never run.
    model = small_model()
    path = str(tmp_path / "small.h5")
    model_lib.save_model(model, path)
    cache = tmp_path / "cache"
    inference.make_runner(model, "openvino", model_path=path, cache_dir=str(cache))
    xml = cache / "openvino" / f"{conversion.model_file_key(path)}.xml"
    target = xml.with_suffix(".bin") if "weights" in damage else xml
    blob = target.read_bytes()
    target.write_bytes(blob[:len(blob) // 2])
    runner = inference.make_runner(model, "openvino", model_path=path, cache_dir=str(cache))
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(runner.predict(images), model.predict(images, verbose=0),
                               atol=1e-5)
    import openvino as ov
    ov.Core().read_model(str(xml))  # and the entry in the cache is whole again
    assert target.stat().st_size > len(blob) // 2


def test_a_first_run_scores_as_a_run_on_the_cached_conversion(trained, tmp_path):
    # load_runner converts the model, then lets the Keras model go: weights shared with it
    # (OpenVINO's default) were freed memory, and a first run scored with whatever reused it.
    import gc
    cache = str(tmp_path / "cache")
    images = np.random.default_rng(4).uniform(0, 255, (8, IMAGE_SIZE, IMAGE_SIZE, 3))
    first, _ = inference.load_runner(trained["model"], "openvino", cache_dir=cache)
    gc.collect()
    reused = [np.random.default_rng(k).random(1 << 20) for k in range(50)]
    again, _ = inference.load_runner(trained["model"], "openvino", cache_dir=cache)
    assert len(reused) == 50 and np.array_equal(first.predict(images), again.predict(images))
