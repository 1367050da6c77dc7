"""Converting a Keras model to OpenVINO and compiling it for the CPU, with the conversion
kept on disk: the cache is keyed by the model file (its path, size and modification time), so
the next start reads it back in a tenth of a second, without TensorFlow, instead of tracing the
model again. The runners that run the compiled models are in inference.py.
"""

import contextlib
import functools
import hashlib
import io
import logging
import os
import warnings

# The conversion cache (shared with the face finder).
from facegender.core.conversions import cache_name, cache_path, read_cached, save

log = logging.getLogger(__name__)

# Images per OpenVINO request: 4 ran 3-8% faster than 2, 8 or 16 here end to end (two cores);
# bench/bench.py compares whole batches.
REQUEST_BATCH = 4


def openvino_available():
    """True when OpenVINO imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def model_file_key(model_path):
    """The cache name of a model file: its path is the family; its size and modification time
    tell a retrained file from the one converted before."""
    st = os.stat(model_path)
    family = hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()[:16]
    return cache_name(family, st.st_size, st.st_mtime_ns)


def convert(model, model_path=None, cache_dir=None, key=None):
    """The Keras model as an OpenVINO model, read from the cache when it is there: the cache
    entry is named by `key`, a (family, *parts) tuple for cache_name, else by `model_path`
    (the file `model` was loaded from), else there is none.

    Conversion traces the model (seconds); reading the saved IR back takes a tenth of one. The
    IR is written as conversions.save writes it (never half of it; an unwritable cache is only
    a missed speed-up), in `cache_dir`/openvino (default: common.default_cache_dir()).
    """
    import openvino as ov
    xml = None
    name = cache_name(*key) if key else (model_file_key(model_path) if model_path else None)
    if name is not None:
        xml = cache_path(name, cache_dir)
        converted = read_cached(xml)
        if converted is not None:
            return converted
    # OpenVINO prints its conversion settings when "--verbose" is anywhere in sys.argv, which
    # is every run of our scripts given --verbose 0: keep that out of their output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # Keras warns about the input's name while tracing
        # Weights copied, not shared with TensorFlow's memory, which load_runner lets go with
        # the Keras model: shared, a first run scored with whatever reused that memory (scores
        # off the cached conversion's by up to 1.0; MTCNN's networks found no faces at all).
        converted = ov.convert_model(inference_function(model), share_weights=False)
    if xml is not None:
        save(converted, xml)
    return converted


def keras_model_of(model, output):
    """The part of a functional `model` that computes its output number `output`."""
    import keras
    return keras.Model(model.input, model.outputs[output])


def inference_function(model):
    """`model` in inference mode as a TensorFlow concrete function, batch size left open.

    Traced without AutoGraph: a Keras model has no Python control flow on tensors to convert,
    and skipping it converts the backbone in 1.2-1.35 s instead of the 1.4-1.6 s it takes when
    OpenVINO is handed the Keras model (and traces it with AutoGraph) on two cores.
    """
    import tensorflow as tf
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    return tf.function(lambda images: model(images, training=False), autograph=False,
                       input_signature=[spec]).get_concrete_function()


def compile_openvino(converted, precision="f32", request_batch=REQUEST_BATCH):
    """Compile for the CPU, in throughput mode (a stream per core) and the requested precision:
    (a function that compiles the model at a fixed batch of `request_batch`, model for any
    batch size, precision used). OpenVINORunner calls the function when a batch first fills
    a request, so a run on a photo or two never pays for it.

    Requests of a few images to a model compiled at their fixed shape run about a third faster
    than whole batches at an open shape (bench/bench.py's eval section shows both; a small
    request's activations stay in cache), so full requests take the fixed model; the rest of a
    batch takes the other. The fixed model is None where the image size is open.
    Threads are not pinned to cores: on a machine shared with other work, pinned threads wait
    for their core while another is free (measured: half the speed next to a training run).
    """
    import openvino as ov
    core = ov.Core()
    if precision == "bf16" and not cpu_has_bf16(core):
        log.warning("note: this CPU has no bfloat16 support; running OpenVINO in float32")
        precision = "f32"
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False,
              "INFERENCE_PRECISION_HINT": "f32" if precision == "f32" else "bf16"}
    shape = converted.input(0).get_partial_shape()
    fixed = None
    if request_batch and shape.rank.is_static and all(d.is_static for d in list(shape)[1:]):
        model = converted.clone()
        model.reshape([request_batch] + [d.get_length() for d in list(shape)[1:]])
        fixed = functools.partial(core.compile_model, model, "CPU", config)
    return fixed, core.compile_model(converted, "CPU", config), precision


def cpu_has_bf16(core):
    """True when OpenVINO's CPU plugin (an openvino.Core's) offers bfloat16 on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cached_conversion(model_path, cache_dir=None):
    """(converted model, input size) of the model file from the cache, its input checked
    against the sidecar; (None, None) when the cache does not have it."""
    from facegender.model import sidecar
    converted = read_cached(cache_path(model_file_key(model_path), cache_dir))
    if converted is None:
        return None, None
    shape = converted.input(0).get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    sidecar.check_input_size(model_path, dims)
    return converted, dims[1]
