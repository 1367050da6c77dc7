"""Speed benchmarks, measured in one run on whatever machine runs them; prints ratios.

    python bench/bench.py [--model_path model_balanced.h5] [--data_path ../shared/data/facecom]

Absolute times drift on shared machines; the ratios, measured side by side, hold. Sections:
  eval      end-to-end evaluation (list, decode, resize, predict: the test_script path) on
            each backend (Keras, OpenVINO float32 and bfloat16) against Keras alone on tensors
            already in memory: is the input pipeline ever the bottleneck?
  pipeline  our tf.data pipeline with augmentation layers against the legacy
            ImageDataGenerator with the same augmentations, alone and inside `fit`
  export    the Keras model against OpenVINO (float32, bfloat16) and its TFLite exports:
            size, one-image latency, batch throughput, largest score change and agreement of
            labels on the dev images
  features  the fast recipe's feature caching (pooled features, then feature maps, of the
            training and validation images, both views, into the cache) on Keras against
            OpenVINO, on the same images
  align     end-to-end scoring of face crops (the test_script path, OpenVINO float32 where
            installed) as given, against the same with face alignment: landmarks already
            cached (every evaluation after the first), and found from scratch (the first) by
            the face finder on OpenVINO and on TensorFlow, with each finder's own rate beside
            them (bench/finder_parity.py checks that the two find the same faces)
  scripts   the scripts as users run them, whole processes with warm caches: test_script.py
            on the dev face crops, aligned and as given, at the default precision (auto) and
            in float32, against Keras predict on tensors; its peak memory with the
            misclassified copies and sheet against --no_copy; a fresh predict.py on one
            photo, and whether it imported TensorFlow
  user      predict.py on 1,000 face crops new to it (empty landmark cache) against the plain
            stack a user would write: the mtcnn package batched on TensorFlow, a square crop,
            Keras predict (both whole processes)
  quality   wall time from ImageNet weights to dev macro-F1 levels (0.85 ... 0.92), reference
            recipe against the fast one (trains both, an hour or more on a CPU, so it runs
            only when named: --sections quality)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402

from facegender.data import decoding, listing  # noqa: E402
from facegender.faces import finder as faces  # noqa: E402
from facegender.runtime import conversion, inference  # noqa: E402
from facegender.model import network as model_lib  # noqa: E402
from facegender.model import sidecar  # noqa: E402
from facegender.data import pipeline  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, repeat=1):
    """Best wall time of `repeat` calls (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timed_rounds(fns, rounds=3):
    """{name: best wall time} of each of `fns`, run in turns round after round, so that a
    change in the machine's other load hits every contender alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn))
    return best


def row(name, value, unit, ratio=None):
    ratio_text = f"{ratio:8.2f}" if ratio is not None else ""
    print(f"  {name:<72} {value:10.1f} {unit:<9} {ratio_text}")


def bench_align(model, model_path, folder, batch_size, limit, threshold):
    """Images/s of scoring face crops as given, and cut to the aligned geometry: landmarks
    cached, and found afresh (a new, empty landmark cache each round) by the face finder on
    OpenVINO (what find_faces uses) and on TensorFlow (the reference, --backend keras)."""
    size = model_lib.input_size(model)
    paths = listing.list_labeled_images(folder)[0][:limit]
    runner = inference.make_runner(model, "auto", "f32", model_path, threshold=threshold)
    geometry = faces.Geometry("aligned", 1.0)
    finders = {"MTCNN on OpenVINO": faces.OpenVINOFaceFinder(),
               "MTCNN on TensorFlow": faces.FaceFinder()}
    warm = tempfile.mkdtemp(prefix="bench-landmarks-")
    found = dict(zip(paths, faces.find_faces(paths, warm, decoding.open_rgb, 0,
                                             finders["MTCNN on OpenVINO"])))

    def found_afresh(finder):
        with tempfile.TemporaryDirectory(prefix="bench-landmarks-") as cold:
            return dict(zip(paths, faces.find_faces(paths, cold, decoding.open_rgb, 0, finder)))

    def as_given():
        inference.score_paths(runner, paths, size, batch_size, verbose=0)

    def aligned(cut):
        inference.score_paths(runner, paths, size, batch_size, verbose=0,
                              reader=decoding.ImageReader(size, geometry, cut))

    as_given()  # warm up: file cache, conversion, first-call setup
    aligned(found)
    print(f"\n[align] {len(paths)} face crops from {folder} at {size}x{size} on {runner.name}; "
          f"no face found in {sum(f is None for f in found.values())}; ratios against the "
          "crops as given (best of 3 rounds, in turns)")
    rounds = {"as given, end to end": as_given,
              "aligned, landmarks cached, end to end":
                  lambda: aligned(decoding.main_faces(paths, geometry, warm, verbose=0))}
    for name, finder in finders.items():
        rounds[f"aligned, landmarks found (first run), end to end; {name}"] = (
            lambda finder=finder: aligned(found_afresh(finder)))
    for name, finder in finders.items():
        rounds[f"the face finder alone ({name}, batched)"] = (
            lambda finder=finder: found_afresh(finder))
    seconds = timed_rounds(rounds, rounds=3)
    base = len(paths) / seconds["as given, end to end"]
    for name, took in seconds.items():
        row(name, len(paths) / took, "images/s", len(paths) / took / base)
    return {name: len(paths) / took for name, took in seconds.items()}


# ---------------------------------------------------------------------------
# The scripts as users run them: whole processes, timed from start to exit

def run_script(args, importtime=False):
    """(wall seconds, peak resident memory in MB, stdout, top-level modules imported) of one
    of the scripts run in a fresh Python, which must succeed."""
    flags = ["-X", "importtime"] if importtime else []
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # A child's peak memory counts what it was forked from (Linux keeps it across exec):
        # a small Python starts the script and reports its peak, not this process's gigabyte.
        done = subprocess.run([sys.executable, "-c", MEASURED, sys.executable, *flags, *args],
                              cwd=HERE, stdout=out, stderr=err, text=True)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{stderr[-2000:]}")
    stderr, _, measured = stderr.rstrip().rpartition("\n")
    seconds, peak_kb = map(float, measured.split())
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return seconds, peak_kb / 1024, stdout, modules


# Runs the command in argv and prints its wall seconds and peak resident kB on stderr's last line.
MEASURED = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"\\n{time.perf_counter() - start} {peak}", file=sys.stderr)
sys.exit(code)
"""


def aligned_copy(model_path, folder):
    """A copy of the model whose sidecar names the aligned geometry, so the scripts align
    (for timing: a model not trained on aligned crops scores them worse)."""
    copy = os.path.join(folder, "aligned.h5")
    shutil.copy2(model_path, copy)
    side = sidecar.load_sidecar(model_path)
    side["face_geometry"] = faces.Geometry("aligned", 1.0).to_dict()
    with open(sidecar.sidecar_path(copy), "w") as f:
        json.dump(side, f)
    return copy


def bench_scripts(model, model_path, folder, batch_size, limit):
    """The issue-30 targets, each a ratio: test_script.py end to end (aligned, landmarks and
    conversion cached) against Keras predict on tensors; aligned against as given; peak
    memory with the misclassified copies and sheet against --no_copy; a fresh predict.py on one
    photo (seconds, and whether TensorFlow was imported)."""
    import openvino as ov

    size = model_lib.input_size(model)
    paths = listing.list_labeled_images(folder)[0]
    images = np.stack([decoding.load_image(p, size) for p in paths[:limit]]).astype(np.float32)
    model.predict(images[:batch_size], verbose=0)
    keras_rate = limit / min(timed(lambda: model.predict(images, batch_size=batch_size,
                                                         verbose=0)) for _ in range(3))
    bf16 = conversion.cpu_has_bf16(ov.Core())  # what the default precision runs here
    with tempfile.TemporaryDirectory(prefix="bench-scripts-") as tmp:
        cache = os.path.join(tmp, "cache")
        aligned = aligned_copy(model_path, tmp)

        def evaluate(model_file, *extra, name="eval", importtime=False):
            return run_script(["test_script.py", "--data_path", folder, "--model_path",
                               model_file, "--cache_dir", cache, "--verbose", "0",
                               "--output_dir", os.path.join(tmp, name), *extra], importtime)

        cold = evaluate(aligned, "--no_copy")[0]  # landmarks found, model converted
        evaluate(model_path, "--no_copy")  # converted
        runs = {"as given": [], "aligned": [], "aligned, copies": [], "aligned, f32": []}
        for _ in range(2):  # in turns, best of two
            runs["as given"].append(evaluate(model_path, "--no_copy"))
            runs["aligned"].append(evaluate(aligned, "--no_copy", importtime=True))
            runs["aligned, copies"].append(evaluate(aligned, name=f"copies{_}"))
            runs["aligned, f32"].append(evaluate(aligned, "--no_copy", "--precision", "f32"))
        best = {name: min(r, key=lambda t: t[0]) for name, r in runs.items()}
        photo = paths[0]
        one = [run_script(["predict.py", photo, "--model_path", model_path, "--cache_dir", cache,
                           "--verbose", "0", "--output", os.path.join(tmp, "one.csv")],
                          importtime=True) for _ in range(3)]
    n = len(paths)
    rate = {name: n / r[0] for name, r in best.items()}
    print(f"\n[scripts] test_script.py on {n} face crops from {folder} (whole processes, "
          "conversion and landmarks cached); ratios against Keras predict on tensors "
          f"({limit} in memory, batch {batch_size})")
    row("keras predict, tensors in memory", keras_rate, "images/s", 1.0)
    row("test_script.py --no_copy, as given", rate["as given"], "images/s",
        rate["as given"] / keras_rate)
    # The default precision, auto: on a CPU with bfloat16, scores in bfloat16 and those near
    # the threshold again in float32 (RecheckedRunner); float32 elsewhere.
    row(f"test_script.py --no_copy, aligned, {'bf16 + f32 recheck' if bf16 else 'f32'} "
        "(default; target >= 2.0x)", rate["aligned"], "images/s", rate["aligned"] / keras_rate)
    row("test_script.py --no_copy --precision f32, aligned", rate["aligned, f32"], "images/s",
        rate["aligned, f32"] / keras_rate)
    row("test_script.py --no_copy, aligned, landmarks found (first run)", n / cold, "images/s",
        n / cold / keras_rate)
    row("aligned against as given (target >= 0.5x)", rate["aligned"], "images/s",
        rate["aligned"] / rate["as given"])
    row("aligned, first run against as given", n / cold, "images/s",
        n / cold / rate["as given"])
    row("peak memory, --no_copy", best["aligned"][1], "MB", 1.0)
    row("peak memory, misclassified copies and sheet (target <= 1.2x)",
        best["aligned, copies"][1], "MB", best["aligned, copies"][1] / best["aligned"][1])
    tf_in = {"tensorflow", "keras"} & best["aligned"][3]
    print(f"  test_script.py --no_copy imported {', '.join(sorted(tf_in)) or 'no TensorFlow'}")
    fastest = min(one, key=lambda r: r[0])
    tf_in = set.union(*(r[3] for r in one)) & {"tensorflow", "keras"}
    row("predict.py on one photo, fresh process, warm caches (target < 1 s)", fastest[0],
        "seconds")
    print(f"  predict.py on one photo imported {', '.join(sorted(tf_in)) or 'no TensorFlow'} "
          f"(python -X importtime); peak memory {fastest[1]:.0f} MB")
    return {"keras": keras_rate, **rate, "cold": n / cold, "one_photo_s": fastest[0],
            "memory_ratio": best["aligned, copies"][1] / best["aligned"][1]}


# The stack a user would write without this toolkit: the `mtcnn` package batched on TensorFlow,
# a square crop around each image's most confident face (the whole image where none is
# found), Keras predict. Run as a whole process, like predict.py: argv is the model file and
# a file listing the photos, one a line.
PLAIN_STACK = """
import sys
import numpy as np
from PIL import Image
import keras
from mtcnn import MTCNN
model = keras.models.load_model(sys.argv[1], compile=False)
size = model.input_shape[1]
paths = open(sys.argv[2]).read().split(chr(10))
finder = MTCNN(device="CPU:0")
scores = []
for start in range(0, len(paths), 32):
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start:start + 32]]
    found = finder.detect_faces(images, min_face_size=40, threshold_onet=0.9)
    crops = []
    for image, faces in zip(images, found):
        if faces:
            x, y, w, h = max(faces, key=lambda f: f["confidence"])["box"]
            side = max(w, h)
            cx, cy = x + w / 2, y + h / 2
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            crop = Image.fromarray(image).crop(tuple(map(round, box)))
        else:
            crop = Image.fromarray(image)
        crops.append(np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32))
    scores += model.predict(np.stack(crops), verbose=0)[:, 0].tolist()
print(len(scores))
"""


def bench_user(model_path, folder, limit):
    """Issue 37's target (b): predict.py on `limit` face crops it has never seen (an empty
    landmark cache; the model's conversion cached, as after any first run) against the
    plain stack a user would write (PLAIN_STACK), both whole processes, best of two."""
    paths = listing.list_labeled_images(folder)[0]
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:limit]]
    with tempfile.TemporaryDirectory(prefix="bench-user-") as tmp:
        cache = os.path.join(tmp, "cache")
        photo_list = os.path.join(tmp, "photos.txt")
        with open(photo_list, "w") as f:
            f.write("\n".join(paths))
        photos = os.path.join(tmp, "photos")  # links: predict.py takes folders and files
        os.makedirs(photos)
        for i, p in enumerate(paths):
            os.symlink(os.path.abspath(p), os.path.join(photos, f"{i:05d}{os.path.splitext(p)[1]}"))

        def ours():
            shutil.rmtree(os.path.join(cache, "landmarks"), ignore_errors=True)
            return run_script(["predict.py", photos, "--model_path", model_path, "--cache_dir",
                               cache, "--verbose", "0", "--output",
                               os.path.join(tmp, "predictions.csv")])

        ours()  # the conversions (the classifier's, the finder's) cached, as after a first run
        times = {"ours": [], "plain": []}
        for _ in range(2):
            times["ours"].append(ours()[0])
            plain = run_script(["-c", PLAIN_STACK, model_path, photo_list])
            assert plain[2].strip() == str(len(paths)), plain[2]
            times["plain"].append(plain[0])
    best = {name: min(t) for name, t in times.items()}
    print(f"\n[user] {len(paths)} new face crops from {folder}, whole processes (best of 2): "
          "predict.py with an empty landmark cache against the mtcnn package on TensorFlow, a "
          "square crop and Keras predict")
    row("plain stack (mtcnn batched, square crop, Keras predict)", len(paths) / best["plain"],
        "images/s", 1.0)
    row("predict.py, landmarks found afresh (target >= 5x)", len(paths) / best["ours"],
        "images/s", best["plain"] / best["ours"])
    return best


# ---------------------------------------------------------------------------

def openvino_runners(model, model_path, threshold):
    """{name: runner} for OpenVINO float32, bfloat16 throughout, and bfloat16 with the scores
    near `threshold` scored again in float32 (what --precision bf16 runs); or {} where
    OpenVINO is missing. The bfloat16 rows are left out on a CPU without bfloat16, where
    --precision bf16 runs float32 and they would time float32 under another name."""
    if not conversion.openvino_available():
        print("  (OpenVINO is not installed: its rows are left out)")
        return {}
    runners = {"openvino f32": inference.make_runner(model, "openvino", "f32", model_path)}
    import openvino as ov
    if not conversion.cpu_has_bf16(ov.Core()):
        print("  (this CPU has no bfloat16: the bf16 rows are left out)")
        return runners
    return {**runners,
            "openvino bf16 throughout": inference.make_runner(model, "openvino", "bf16",
                                                              model_path),
            "openvino bf16, f32 near the threshold": inference.make_runner(
                model, "openvino", "bf16", model_path, threshold=threshold)}


def bench_eval(model, model_path, folder, batch_size, limit, threshold):
    """Images/s of the test_script path on each backend against Keras alone on tensors."""
    size = model_lib.input_size(model)
    paths = listing.list_labeled_images(folder)[0][:limit]
    images = np.stack([decoding.load_image(p, size) for p in paths]).astype(np.float32)
    model.predict(images[:batch_size], verbose=0)  # trace once, outside the timing
    runners = {"keras": inference.make_runner(model, "keras"),
               **openvino_runners(model, model_path, threshold)}
    if "openvino f32" in runners:  # what the requests of REQUEST_BATCH at a fixed shape gain
        runners["openvino f32, whole batches"] = (
            inference.make_runner(model, "openvino", "f32", model_path, request_batch=None))

    def end_to_end(runner):
        found = listing.list_labeled_images(folder)[0][:limit]
        inference.score_paths(runner, found, size, batch_size, verbose=0)

    def in_memory(runner):
        list(runner.map((i, images[i:i + batch_size]) for i in range(0, len(images),
                                                                     batch_size)))

    print(f"\n[eval] {len(paths)} images from {folder} at {size}x{size}, batch {batch_size}; "
          "ratios against Keras predict on tensors in memory (best of 5 rounds, in turns)")
    contenders = {"keras predict, tensors in memory":
                  lambda: model.predict(images, batch_size=batch_size, verbose=0)}
    for name, runner in runners.items():
        end_to_end(runner)  # warm up: file cache, first-call setup
        if name != "keras":
            contenders[f"{name}, tensors in memory"] = lambda r=runner: in_memory(r)
        contenders[f"{name}, end to end (list, decode, score)"] = (
            lambda r=runner: end_to_end(r))
    contenders["decode and resize alone (the input pipeline's ceiling)"] = lambda: [
        None for _ in inference.decoded_batches(paths, decoding.ImageReader(size), batch_size)]
    seconds = timed_rounds(contenders, rounds=5)
    alone = len(paths) / seconds["keras predict, tensors in memory"]
    results = {}
    for name, took in seconds.items():
        row(name, len(paths) / took, "images/s", len(paths) / took / alone)
        results[name] = len(paths) / took
    return results


def legacy_generator(train_dir, size, batch_size):
    """The reference's input pipeline: ImageDataGenerator with the same augmentations."""
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=20, zoom_range=0.2, shear_range=0.2, width_shift_range=0.2,
        height_shift_range=0.2, brightness_range=(0.8, 1.2), horizontal_flip=True,
        fill_mode="nearest")
    return generator.flow_from_directory(train_dir, target_size=(size, size), classes=["female",
                                         "male"], class_mode="binary", batch_size=batch_size,
                                         shuffle=True, seed=0)


def bench_pipeline(train_dir, size, batch_size, steps):
    paths, labels = listing.list_labeled_images(train_dir)
    ours = pipeline.make_train_dataset(paths, labels, decoding.ImageReader(size), batch_size, 1.0,
                                       True)
    legacy = legacy_generator(train_dir, size, batch_size)

    def drain_ours():
        for _ in ours.take(steps):
            pass

    def drain_legacy():
        for _ in range(steps):
            next(legacy)

    drain_ours(), drain_legacy()  # warm both up (tracing, file cache)
    n = steps * batch_size
    ours_alone = n / timed(drain_ours, 3)
    legacy_alone = n / timed(drain_legacy, 3)
    # Inside fit: the frozen-backbone model of the head warm-up, so the input matters.
    model = model_lib.build_model(size, "none", trainable_layers=0)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    ours_fit = ours.map(lambda x, y, w: (x, y))
    model.fit(ours_fit.take(2), verbose=0)
    fit_ours = n / timed(lambda: model.fit(ours_fit.take(steps), verbose=0), 2)
    fit_legacy = n / timed(lambda: model.fit(legacy, steps_per_epoch=steps, verbose=0), 2)
    print(f"\n[pipeline] decode + augment, {n} images at {size}x{size} from {train_dir}")
    row("legacy ImageDataGenerator, alone", legacy_alone, "images/s", 1.0)
    row("tf.data + Keras preprocessing layers, alone", ours_alone, "images/s",
        ours_alone / legacy_alone)
    row("legacy ImageDataGenerator, inside fit (frozen backbone)", fit_legacy, "images/s", 1.0)
    row("tf.data + Keras preprocessing layers, inside fit", fit_ours, "images/s",
        fit_ours / fit_legacy)


def bench_quality(data_path, weights, levels, budget_minutes, recipes):
    """Wall time from ImageNet weights to each validation macro-F1 level, per recipe.

    Each recipe runs `train_model.py` to its end (or the budget) in a fresh process with an
    empty feature cache, so the first run's costs count; the time an epoch ends is read from
    its checkpoint. A level that one recipe reaches and the other does not within its run
    says so instead of giving a ratio.
    """
    import subprocess

    print(f"\n[quality] wall time from ImageNet weights to validation macro-F1 on {data_path} "
          f"(each recipe run to its end, at most {budget_minutes:g} min)")
    curves = {}
    for recipe in recipes:
        with tempfile.TemporaryDirectory() as tmp:
            # The top-block stage on cached feature maps logs its epochs first, in its own file.
            stage_file = os.path.join(tmp, "model_checkpoints", "feature_stage.json")
            state_file = os.path.join(tmp, "model_checkpoints", "state.json")
            command = [sys.executable, os.path.join(HERE, "train_model.py"), "--recipe", recipe,
                       "--data_path", data_path, "--weights", weights,
                       "--output", os.path.join(tmp, "model.h5"),
                       "--cache_dir", os.path.join(tmp, "cache"), "--verbose", "0"]
            curve = []  # (seconds since start, validation macro-F1) at each epoch's end
            start = time.perf_counter()
            with open(os.path.join(tmp, "log.txt"), "w") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                while time.perf_counter() - start < budget_minutes * 60:
                    finished = process.poll() is not None
                    f1s = []
                    for name in (stage_file, state_file):
                        if os.path.exists(name):
                            with open(name) as f:
                                f1s += json.load(f)["history"].get("val_macro_f1", [])
                    now = time.perf_counter() - start
                    for f1 in f1s[len(curve):]:
                        curve.append((now, f1))
                        print(f"    {recipe} epoch {len(curve)}: macro-F1 {f1:.3f} at "
                              f"{now / 60:.1f} min", flush=True)
                    if finished:
                        break
                    time.sleep(1)
                process.kill()
                process.wait()
            if process.returncode not in (0, -9):
                with open(os.path.join(tmp, "log.txt")) as f:
                    tail = f.read()[-2000:]
                raise SystemExit(f"train_model.py --recipe {recipe} failed:\n{tail}")
        curves[recipe] = curve
        print(f"  {recipe}: {len(curve)} epoch(s) in {time.perf_counter() - start:.0f} s; "
              "per-epoch macro-F1 " + " ".join(f"{f1:.3f}" for _, f1 in curve))

    print_quality_table(curves, levels, recipes)


def print_quality_table(curves, levels, recipes):
    """Minutes each recipe took to reach each level, and first / second when there are two.

    When only the second reaches a level, the first's whole run is a lower bound on its time.
    """
    def time_to(curve, level):
        return next((t for t, f1 in curve if f1 >= level), None)

    pair = len(recipes) == 2
    print(f"  {'macro-F1 >=':<12}" + "".join(f"{r + ' min':>16}" for r in recipes)
          + (f"{recipes[0] + ' / ' + recipes[1]:>22}" if pair else ""))
    for level in levels:
        times = [time_to(curves[r], level) for r in recipes]
        cells = "".join(f"{t / 60:16.1f}" if t else f"{'not reached':>16}" for t in times)
        ratio = ""
        if pair:
            first, second = times
            if first and second:
                ratio = f"{first / second:.1f}"
            elif second and curves[recipes[0]]:
                ratio = f">= {curves[recipes[0]][-1][0] / second:.1f}"
            else:
                ratio = "-"
        print(f"  {level:<12.2f}{cells}{ratio:>22}")


def bench_export(model_path, model, agreement_sets, calibration_dir, threshold):
    """Size, latency, throughput and label agreement of each backend and TFLite export against
    Keras.

    int8 is calibrated on training images; agreement is counted on each of `agreement_sets`
    ({name: image paths}), images the calibration never saw. max |dP| is the largest change of
    a score against Keras over all of them.
    """
    from facegender.model import export
    size = model_lib.input_size(model)
    sets = {name: np.stack([decoding.load_image(p, size) for p in paths]).astype(np.float32)
            for name, paths in agreement_sets.items()}
    images = next(iter(sets.values()))
    with tempfile.TemporaryDirectory() as tmp:
        written = export.export(model_path, tmp, ("float16", "int8"), calibration_dir, 200)
        runners = {"keras": (model_path, lambda x: model.predict_on_batch(x)[:, 0])}
        for name, runner in openvino_runners(model, model_path, threshold).items():
            runners[name] = (None, lambda x, r=runner: r.predict(x)[:, 0])
        for kind, path in written.items():
            runners[f"tflite {kind}"] = (path, export.TFLiteModel(path).predict)
        keras_scores = {}
        print(f"\n[export] at {size}x{size}, threshold {threshold:.2f}; int8 calibrated on "
              f"200 images from {calibration_dir}; OpenVINO converted in memory (no file)")
        headers = [f"same label as keras, {name} ({len(x)})" for name, x in sets.items()]
        width = max(map(len, runners))
        print(f"  {'model':<{width}} {'MB':>6} {'1 image ms':>11} {'batch 32 img/s':>15} "
              f"{'max |dP|':>9}   " + "   ".join(headers))
        for name, (path, run) in runners.items():
            run(images[:1])
            run(images[:32])
            latency = np.median([timed(lambda: run(images[i:i + 1])) for i in range(30)]) * 1e3
            throughput = 32 * 4 / timed(lambda: [run(images[i:i + 32]) for i in (0, 32, 64, 96)])
            agreement, change = [], 0.0
            for set_name, x in sets.items():
                scores = np.concatenate([run(x[i:i + 32]) for i in range(0, len(x), 32)])
                reference = keras_scores.setdefault(set_name, scores)
                change = max(change, float(np.max(np.abs(scores - reference))))
                agreement.append(np.mean((scores >= threshold) == (reference >= threshold)))
            megabytes = f"{os.path.getsize(path) / 1e6:6.1f}" if path else f"{'-':>6}"
            print(f"  {name:<{width}} {megabytes} {latency:11.1f} {throughput:15.1f} "
                  f"{change:9.2g}   "
                  + "   ".join(f"{a:{len(h)}.2%}" for a, h in zip(agreement, headers)))


def bench_features(model, data_path, batch_size, limit):
    """Seconds for the feature caching of the fast recipe (train_model.py --recipe fast): the
    head warm-up's pooled features, then the top-block stage's feature maps at
    FEATURE_MAP_LAYER, each of the training and then the validation images, both views, into an
    empty cache; on each backend, same images. OpenVINO runs twice: converting the extractor
    that both caches share (a first run on these weights), and reading its conversion back
    from the cache (any later run)."""
    from facegender.training import features
    folders = [os.path.join(data_path, part) for part in ("train", "dev")]
    path_lists = [listing.list_labeled_images(folder)[0][:limit] for folder in folders]
    layer = model_lib.FEATURE_MAP_LAYER
    passes = ["keras"] + (["openvino", "openvino cached"] if conversion.openvino_available()
                          else [])
    print(f"\n[features] the fast recipe's feature caching: pooled features, then feature maps "
          f"at {layer}, both views, of {' and '.join(map(str, map(len, path_lists)))} images "
          f"from {' and '.join(folders)}, batch {batch_size}, into an empty cache")
    maps, seconds = {}, {}
    labels = {"keras": "keras",
              "openvino": "openvino, converting its extractor",
              "openvino cached": "openvino, its conversion cached"}
    total = 2 * sum(map(len, path_lists))  # each image twice: pooled, then maps
    # An empty conversion cache: nothing converted by an earlier run is read back.
    with tempfile.TemporaryDirectory() as converted, \
            mock.patch.dict(os.environ, {"FACEGENDER_CACHE": converted}):
        for name in passes:
            backend = name.split()[0]
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                for paths in path_lists:
                    features.pooled_features(model, paths, tmp, batch_size, 0, backend)
                for paths in path_lists:
                    plain, _, _ = features.feature_maps(model, layer, paths, tmp, batch_size, 0,
                                                        backend)
                seconds[name] = time.perf_counter() - start
                maps[name] = np.asarray(plain, np.float32)
            row(labels[name], total / seconds[name], "images/s",
                seconds["keras"] / seconds[name])
    if "openvino" in maps:
        print(f"  largest difference of a feature-map value, openvino against keras (float16 "
              f"cache): {np.max(np.abs(maps['openvino'] - maps['keras'])):.2g} "
              f"(values up to {np.max(np.abs(maps['keras'])):.2g})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", default=os.path.join(HERE, "model_balanced.h5"))
    p.add_argument("--data_path", default=os.path.join(HERE, "..", "shared", "data", "facecom"),
                   help="a folder with train/ and dev/, each holding female/ and male/")
    p.add_argument("--sections", nargs="+",
                   default=["eval", "pipeline", "export", "features", "align", "scripts"],
                   choices=["eval", "pipeline", "export", "features", "align", "scripts",
                            "user", "quality"],
                   help="quality trains from scratch (an hour or more on a CPU), so it runs "
                        "only when named")
    p.add_argument("--weights", default=os.path.join(HERE, "..", "shared", "weights",
                                                     "mobilenet_v2_1.0_224_no_top.imagenet."
                                                     "weights.h5"),
                   help="ImageNet weights for the quality section")
    p.add_argument("--levels", type=float, nargs="+", default=[0.85, 0.88, 0.90, 0.92],
                   help="validation macro-F1 levels to time")
    p.add_argument("--budget_minutes", type=float, default=120,
                   help="stop a recipe still running after this long")
    p.add_argument("--recipes", nargs="+", default=["reference", "fast"],
                   help="recipes to time; with two, the table gives first / second")
    p.add_argument("--more_dev", nargs="*",
                   default=[os.path.join(HERE, "..", "shared", "data", "facecom_distorted", "dev")],
                   help="more validation folders to count export agreement on")
    p.add_argument("--user_path", default=os.path.join(HERE, "..", "faces", "utkface", "dev"),
                   help="labelled face crops for the user section (new to the landmark cache)")
    p.add_argument("--user_images", type=int, default=1000,
                   help="face crops the user section runs both stacks on")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--pipeline_steps", type=int, default=20)
    p.add_argument("--limit", type=int, default=256,
                   help="images timed in the eval and features sections (agreement in export "
                        "counts every dev image)")
    args = p.parse_args(argv)

    model = model_lib.load_model(args.model_path)
    threshold = float(sidecar.load_sidecar(args.model_path).get("threshold", 0.5))
    dev = os.path.join(args.data_path, "dev")
    dev_paths = listing.list_labeled_images(dev)[0]
    print(f"machine: {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}; model {args.model_path}")
    if "eval" in args.sections:
        bench_eval(model, args.model_path, dev, args.batch_size, args.limit, threshold)
    if "pipeline" in args.sections:
        bench_pipeline(os.path.join(args.data_path, "train"), model_lib.input_size(model),
                       args.batch_size, args.pipeline_steps)
    if "export" in args.sections:
        agreement_sets = {"dev": dev_paths}
        for folder in args.more_dev:
            if os.path.isdir(folder):
                agreement_sets[os.path.basename(os.path.dirname(os.path.normpath(folder)))
                               + " dev"] = listing.list_labeled_images(folder)[0]
        bench_export(args.model_path, model, agreement_sets,
                     os.path.join(args.data_path, "train"), threshold)
    if "features" in args.sections:
        bench_features(model, args.data_path, args.batch_size, args.limit)
    if "align" in args.sections:
        bench_align(model, args.model_path, dev, args.batch_size, args.limit, threshold)
    if "scripts" in args.sections:
        bench_scripts(model, args.model_path, dev, args.batch_size, args.limit)
    if "user" in args.sections:
        bench_user(args.model_path, args.user_path, args.user_images)
    if "quality" in args.sections:
        bench_quality(args.data_path, args.weights, args.levels, args.budget_minutes,
                      args.recipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
