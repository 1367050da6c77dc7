"""Exporting a saved model to TensorFlow Lite for phones and small boards (export.py's work;
its command line is facegender.cli.export).

`export` writes `<model>_float16.tflite` (weights stored as float16: half the size, the same
answers) and, with images to calibrate on, `<model>_int8.tflite` (weights and activations in 8
bits, its quantization ranges measured on those images). Each gets a JSON sidecar with the
threshold. Both take raw RGB 0..255 float32 input, like the Keras model, and output P(male).
"""

import contextlib
import io
import logging
import os

import numpy as np
import tensorflow as tf

from facegender.core.common import DataError, UsageError, default_cache_dir
from facegender.core.outputs import atomic_path, make_writable_dir, write_json
from facegender.data import decoding, listing
from facegender.model import network as model_lib
from facegender.model.sidecar import face_geometry, load_sidecar

log = logging.getLogger(__name__)

def calibration_sample(paths, count=200, seed=0):
    """Twice `count` of `paths`, drawn evenly at random (seeded): enough for `count` readable
    ones, and no more to find faces in."""
    order = np.random.default_rng(seed).permutation(len(paths))[:2 * count]
    return [paths[i] for i in order]


def calibration_images_of(paths, reader, count=200):
    """The first `count` of `paths` that `reader` (a decoding.ImageReader: the model's input, its
    face crop where it has one) decodes, as uint8 arrays: decoded once, before conversion, so
    that an int8 model is never written without them."""
    images = []
    for path in paths:
        if len(images) >= count:
            break
        image, ok = reader(path)
        if ok:  # calibration only needs usable images
            images.append(np.asarray(image, np.uint8))
    return images


def representative_images(images):
    """The calibration images as float32 batches of one, as the TFLite converter takes them."""
    for image in images:
        yield [image[None].astype(np.float32)]


def to_tflite(model, kind, calibration=None):
    """Convert a Keras model to TFLite bytes: kind 'float32', 'float16' or 'int8'; int8 is
    calibrated on `calibration`, the model's input images (calibration_images_of)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if not calibration:  # it would write 8-bit weights with guessed activation ranges
            raise UsageError("int8 needs calibration images; none were given")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_images(calibration)
        # Integer kernels throughout; input and output stay float so callers need not care.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif kind != "float32":
        raise ValueError(f"unknown TFLite kind {kind!r}")
    # Keras prints the temporary SavedModel it converts through, with a line for every weight.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def tflite_interpreter_class():
    """LiteRT's interpreter (the `ai-edge-litert` package) when installed, else TensorFlow's.

    `tf.lite.Interpreter` is deprecated in favour of LiteRT and will leave TensorFlow; both run
    the same .tflite files with the same kernels.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return tf.lite.Interpreter
    return Interpreter


class TFLiteModel:
    """Runs a .tflite classifier on batches of raw RGB 0..255 images; returns P(male)."""

    def __init__(self, path, num_threads=None):
        self.interpreter = tflite_interpreter_class()(model_path=path, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def predict(self, images):
        images = np.asarray(images, np.float32)
        if self.batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], images.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[:, 0].copy()


def export(model_path, output_dir=None, kinds=("float16", "int8"), calibration_path=None,
           calibration_images=200):
    """Write each requested TFLite model and its sidecar; returns {kind: path}."""
    output_dir = output_dir or os.path.dirname(os.path.abspath(model_path))
    try:  # before minutes of conversion, not after
        make_writable_dir(output_dir)
    except OSError as err:
        raise UsageError(f"--output_dir {output_dir}: cannot be written ({err.strerror})"
                         ) from None
    model = model_lib.load_model(model_path)
    sidecar = load_sidecar(model_path)
    calibration = None
    if "int8" in kinds:
        if calibration_path is None:
            raise UsageError("int8 needs images to measure activation ranges on; pass "
                             "--calibration_path DIR (a folder of face images)")
        listing.check_folder(calibration_path)
        calibration = calibration_sample(listing.list_image_files(calibration_path),
                                         calibration_images)
        if not calibration:
            raise DataError(f"{calibration_path}: holds no images to calibrate int8 on")
        geometry = face_geometry(model_path)
        # Calibrate on the crops the model is fed, not the images as given.
        reader = decoding.ImageReader(model_lib.input_size(model), geometry, None if geometry is None
                                  else decoding.main_faces(calibration, geometry,
                                                       default_cache_dir(), verbose=0))
        calibration = calibration_images_of(calibration, reader, calibration_images)
        if not calibration:
            raise DataError(f"{calibration_path}: none of its images decodes; int8 needs "
                            "face images to calibrate on")
        if len(calibration) < calibration_images:
            log.info(f"note: calibrating int8 on {len(calibration)} images, not "
                     f"{calibration_images}: that is all {calibration_path} has that decode")
    stem = os.path.splitext(os.path.basename(model_path))[0]
    written = {}
    for kind in kinds:
        path = os.path.join(output_dir, f"{stem}_{kind}.tflite")
        blob = to_tflite(model, kind, calibration)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(blob)
        write_json(os.path.splitext(path)[0] + ".json",
                   {**sidecar, "format": f"tflite {kind}", "exported_from": os.path.basename(
                       model_path)})
        written[kind] = path
    return written

