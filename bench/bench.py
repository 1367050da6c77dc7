"""Speed benchmarks, measured in one run on whatever machine runs them; prints ratios.

    python bench/bench.py [--model_path model_balanced.h5] [--data_path ../shared/data/facecom]

Absolute times drift on shared machines; the ratios, measured side by side, hold. Sections:
  eval      end-to-end evaluation (list, decode, resize, predict) against the model alone on
            tensors already in memory: is the input pipeline ever the bottleneck?
  pipeline  our tf.data pipeline with augmentation layers against the legacy
            ImageDataGenerator with the same augmentations, alone and inside `fit`
  export    the Keras model against its TFLite exports: size, one-image latency, batch
            throughput, and agreement of labels on the dev images
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402

import data  # noqa: E402
import model as model_lib  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, repeat=1):
    """Best wall time of `repeat` calls (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row(name, value, unit, ratio=None):
    ratio_text = f"{ratio:8.2f}" if ratio is not None else ""
    print(f"  {name:<58} {value:10.1f} {unit:<9} {ratio_text}")


# ---------------------------------------------------------------------------

def bench_eval(model, folder, batch_size):
    """Images/s of the test_script path against the model alone on in-memory tensors."""
    size = model_lib.input_size(model)
    paths = data.list_labeled_images(folder)[0]
    images = np.stack([data.load_image(p, size) for p in paths]).astype(np.float32)
    model.predict(images[:batch_size], verbose=0)  # trace once, outside the timing

    def end_to_end():
        found = data.list_labeled_images(folder)[0]
        model.predict(data.make_eval_dataset(found, data.ImageReader(size), batch_size),
                      verbose=0)

    alone = len(paths) / timed(lambda: model.predict(images, batch_size=batch_size, verbose=0), 2)
    e2e = len(paths) / timed(end_to_end, 2)
    print(f"\n[eval] {len(paths)} images at {size}x{size}, batch {batch_size}")
    row("model alone, tensors in memory", alone, "images/s", 1.0)
    row("end to end: list, decode, resize, predict (test_script path)", e2e, "images/s",
        e2e / alone)
    return {"ratio": e2e / alone}


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
    paths, labels = data.list_labeled_images(train_dir)
    ours = data.make_train_dataset(paths, labels, data.ImageReader(size), batch_size, 1.0, True)
    legacy = legacy_generator(train_dir, size, batch_size)

    def drain_ours():
        for _ in ours.take(steps):
            pass

    def drain_legacy():
        for _ in range(steps):
            next(legacy)

    drain_ours(), drain_legacy()  # warm both up (tracing, file cache)
    n = steps * batch_size
    ours_alone = n / timed(drain_ours)
    legacy_alone = n / timed(drain_legacy)
    # Inside fit: the frozen-backbone model of the head warm-up, so the input matters.
    model = model_lib.build_model(size, "none", trainable_layers=0)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    ours_fit = ours.map(lambda x, y, w: (x, y))
    model.fit(ours_fit.take(2), verbose=0)
    fit_ours = n / timed(lambda: model.fit(ours_fit.take(steps), verbose=0))
    fit_legacy = n / timed(lambda: model.fit(legacy, steps_per_epoch=steps, verbose=0))
    print(f"\n[pipeline] decode + augment, {n} images at {size}x{size} from {train_dir}")
    row("legacy ImageDataGenerator, alone", legacy_alone, "images/s", 1.0)
    row("tf.data + Keras preprocessing layers, alone", ours_alone, "images/s",
        ours_alone / legacy_alone)
    row("legacy ImageDataGenerator, inside fit (frozen backbone)", fit_legacy, "images/s", 1.0)
    row("tf.data + Keras preprocessing layers, inside fit", fit_ours, "images/s",
        fit_ours / fit_legacy)


def bench_export(model_path, model, paths, calibration_dir, threshold):
    import export
    size = model_lib.input_size(model)
    images = np.stack([data.load_image(p, size) for p in paths]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        written = export.export(model_path, tmp, ("float16", "int8"), calibration_dir, 200)
        runners = {"keras": (model_path, lambda x: model.predict_on_batch(x)[:, 0])}
        for kind, path in written.items():
            runners[f"tflite {kind}"] = (path, export.TFLiteModel(path).predict)
        reference_labels = None
        print(f"\n[export] {len(paths)} dev images at {size}x{size}, threshold {threshold:.2f}")
        print(f"  {'model':<14} {'MB':>6} {'1 image ms':>11} {'batch 32 img/s':>15} "
              f"{'same label as keras':>20}")
        for name, (path, run) in runners.items():
            run(images[:1])
            run(images[:32])
            latency = np.median([timed(lambda: run(images[i:i + 1])) for i in range(30)]) * 1e3
            throughput = 32 * 4 / timed(lambda: [run(images[i:i + 32]) for i in (0, 32, 64, 96)])
            scores = np.concatenate([run(images[i:i + 32]) for i in range(0, len(images), 32)])
            labels = scores >= threshold
            if reference_labels is None:
                reference_labels = labels
            agree = np.mean(labels == reference_labels)
            print(f"  {name:<14} {os.path.getsize(path) / 1e6:6.1f} {latency:11.1f} "
                  f"{throughput:15.1f} {agree:19.2%}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", default=os.path.join(HERE, "model_balanced.h5"))
    p.add_argument("--data_path", default=os.path.join(HERE, "..", "shared", "data", "facecom"),
                   help="a folder with train/ and dev/, each holding female/ and male/")
    p.add_argument("--sections", nargs="+", default=["eval", "pipeline", "export"],
                   choices=["eval", "pipeline", "export"])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--pipeline_steps", type=int, default=20)
    args = p.parse_args(argv)

    model = model_lib.load_model(args.model_path)
    threshold = float(model_lib.load_sidecar(args.model_path).get("threshold", 0.5))
    dev = os.path.join(args.data_path, "dev")
    dev_paths = data.list_labeled_images(dev)[0]
    print(f"machine: {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}; model {args.model_path}")
    if "eval" in args.sections:
        bench_eval(model, dev, args.batch_size)
    if "pipeline" in args.sections:
        bench_pipeline(os.path.join(args.data_path, "train"), model_lib.input_size(model),
                       args.batch_size, args.pipeline_steps)
    if "export" in args.sections:
        bench_export(args.model_path, model, dev_paths, dev, threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
