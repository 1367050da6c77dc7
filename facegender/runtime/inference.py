"""Running a model over image files: the one road from paths to scores, on OpenVINO or Keras.

Every script scores images through `score_paths` (and the feature cache through `run_paths`):
files are decoded by a few threads while the model works on the batch before, unreadable files
are reported by name and returned beside the scores, never through a side channel.

The backend is OpenVINO when it is installed (the Keras model is converted in memory, and the
converted model is kept on disk, keyed by the model file, so the next start skips the
conversion), Keras otherwise. On a CPU OpenVINO runs this MobileNetV2 faster than Keras in
float32, with the same scores to about 1e-5; its bfloat16 mode is faster again, on CPUs that
have it, but moves scores by up to about a tenth, so it is used where a decision threshold is
known (`precision='auto'`, the default, or 'bf16'), and the scores it puts near that threshold
are computed again in float32, so that labels stay float32's; `precision='f32'` is float32
throughout. bench/bench.py measures the speeds, bench/bf16_margin.py that the labels match.
Converting, caching and compiling are conversion.py's job.
"""

import collections
import logging
import os

import numpy as np

from facegender.data import decoding
from facegender.core.common import MissingDependency, ModelError, UsageError
from facegender.core import workers
from facegender.runtime import conversion
from facegender.core.progress import Progress

log = logging.getLogger(__name__)

BACKENDS = ("auto", "keras", "openvino")
# bfloat16 moved the log-odds of 99.5% of 7,671 training images (FACECOM, its degraded copies,
# CelebA, UTKFace) by less than this (bench/bf16_margin.py); only a score this close to the
# threshold can flip.
BF16_RECHECK_LOGIT = 0.5
# auto: bf16 with the float32 recheck where the CPU has bfloat16 and a threshold is known
# (labels stay float32's), float32 otherwise.
PRECISIONS = ("auto", "f32", "bf16")
PREFETCH_BATCHES = 3  # decoded batches waiting ahead of the model: keeps it fed, bounds memory


# ---------------------------------------------------------------------------
# Backends: each maps an iterable of (tag, float32 batch) to (tag, output) in the same order

class Runner:
    """What every backend offers besides `map`: one batch's output, at once."""

    def predict(self, batch):
        """The model's output for one batch."""
        return next(self.map([(None, np.asarray(batch, np.float32))]))[1]


class KerasRunner(Runner):
    """Runs a Keras model batch by batch; TensorFlow releases the GIL, so decoding overlaps."""

    name = "keras"

    def __init__(self, model):
        self.model = model

    def map(self, items):
        for tag, batch in items:
            yield tag, np.asarray(self.model.predict_on_batch(batch))


class OpenVINORunner(Runner):
    """Runs a compiled OpenVINO model with async queues, a few requests in flight.

    Each batch is cut into requests of REQUEST_BATCH images for the model compiled at that fixed
    shape, the rest go to the model compiled for any batch size; the outputs come back
    reassembled, batch by batch, in order. `fixed` may be a function that compiles the fixed
    model: it is then called when the first full request comes (compiling it costs a few
    tenths of a second, more than scoring a photo or two).
    """

    def __init__(self, fixed, any_size, precision, request_batch=None):
        self.name = f"openvino {precision}"
        self.request_batch = request_batch if fixed is not None else None
        self.fixed = fixed
        self.queues = [None, self.queue(any_size)]  # fixed (made when first needed), any size
        self.finished = None

    @staticmethod
    def queue(compiled):
        """An AsyncInferQueue of `compiled` with its request counter (workers.Inflight), after
        one inference on this thread: the first inference of a process initialises C++ statics
        in OpenVINO's Python binding, and two threads doing that at once (this one starting a
        request, an OpenVINO thread reading one's output) can deadlock on them."""
        import openvino as ov
        # One image; an open image size (no model here has one) gets 64 pixels.
        shape = [d.get_length() if d.is_static else 1 if i == 0 else 64
                 for i, d in enumerate(compiled.input(0).get_partial_shape())]
        request = compiled.create_infer_request()
        request.infer({0: np.zeros(shape, np.float32)})
        request.get_output_tensor(0).data.copy()
        return workers.Inflight(ov.AsyncInferQueue(compiled, max(1, int(compiled.get_property(
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS")))), "an OpenVINO inference request")

    def fixed_queue(self):
        if self.queues[0] is None:
            compiled = self.fixed() if callable(self.fixed) else self.fixed
            self.queues[0] = self.queue(compiled)
            if self.finished is not None:
                self.set_callback(self.queues[0])
        return self.queues[0]

    def set_callback(self, inflight):
        def finished(request, k):  # runs on an OpenVINO thread
            self.finished(request, k)
            inflight.finished()
        inflight.queue.set_callback(finished)

    def requests(self, batch):
        """(queue, images) for each request that `batch` is cut into."""
        if self.request_batch is None:
            return [(self.queues[1], batch)]
        n = len(batch) - len(batch) % self.request_batch
        return ([(self.fixed_queue(), batch[i:i + self.request_batch])
                 for i in range(0, n, self.request_batch)]
                + ([(self.queues[1], batch[n:])] if n < len(batch) else []))

    def made(self):
        return [q for q in self.queues if q is not None]

    def map(self, items):
        for queue in self.made():
            queue.wait_all()  # nothing left over from an earlier, abandoned map
        done, pending, submitted = {}, collections.deque(), 0

        def finished(request, k):  # the output buffer is reused: copy it
            done[k] = request.get_output_tensor(0).data.copy()

        def ready():
            while pending and all(k in done for k in pending[0][1]):
                tag, keys = pending.popleft()
                yield tag, np.concatenate([done.pop(k) for k in keys])

        self.finished = finished
        for queue in self.made():
            self.set_callback(queue)
        for tag, batch in items:
            keys = []
            for queue, images in self.requests(batch):
                queue.start({0: images}, submitted)  # waits (bounded) while every request is busy
                keys.append(submitted)
                submitted += 1
            pending.append((tag, keys))
            yield from ready()
        for queue in self.made():
            queue.wait_all()
        yield from ready()
        for queue in self.made():
            queue.wait_all()
        yield from ready()


class RecheckedRunner(Runner):
    """A bfloat16 runner whose scores near the decision threshold are computed again in float32.

    bfloat16 moves a score's log-odds by 0.1 at the median and rarely by more than 0.5, so only
    a score that close to the threshold can come out on the other side of it. Re-scoring those
    few images (about one in seventeen on the dev folders) in float32 keeps most of bfloat16's
    speed and float32's labels; the other scores keep bfloat16's small error.
    """

    def __init__(self, fast, exact, threshold, margin=BF16_RECHECK_LOGIT):
        self.fast, self.exact, self.threshold, self.margin = fast, exact, threshold, margin
        self.name = f"{fast.name}, f32 near the threshold"
        self.cut = logit(threshold)

    def map(self, items):
        batches = collections.deque()  # the batches the fast runner holds, in order

        def kept():
            for tag, batch in items:
                batches.append(batch)
                yield tag, batch

        for tag, output in self.fast.map(kept()):
            batch = batches.popleft()
            near = np.abs(logit(output[:, 0]) - self.cut) < self.margin
            if near.any():
                output = output.copy()
                output[near] = self.exact.predict(batch[near])
            yield tag, output


def with_mirror(images):
    """The batch followed by its horizontal mirror images (NHWC: width is axis 2)."""
    return np.concatenate([images, images[:, :, ::-1]])


class FlipAveraged(Runner):
    """Test-time flip averaging: each image's output is the mean of the model's output on it and
    on its horizontal mirror (training flips at random, so both are faces the model knows).

    The mirrors ride in the same batch as the images, so any runner gets it unchanged; it costs
    twice the compute per image.
    """

    tta = True

    def __init__(self, runner):
        self.runner = runner
        self.name = f"{runner.name}, tta (mean with the mirror)"

    def map(self, items):
        def doubled():
            for tag, batch in items:
                yield tag, with_mirror(batch)

        for tag, output in self.runner.map(doubled()):
            n = len(output) // 2
            yield tag, (output[:n] + output[n:]) / 2


def flip_averaged(runner):
    """`runner` with test-time flip averaging (FlipAveraged); a runner that has it already is
    returned as is. A bf16 runner that rechecks near the threshold rechecks the averaged score,
    since that is what gets the label (averaging two scores moves the log-odds by no more than
    the larger of the two moves, so its margin still holds)."""
    if getattr(runner, "tta", False):
        return runner
    if isinstance(runner, RecheckedRunner):
        averaged = RecheckedRunner(FlipAveraged(runner.fast), FlipAveraged(runner.exact),
                                   runner.threshold, runner.margin)
        averaged.name, averaged.tta = f"{runner.name}, tta (mean with the mirror)", True
        return averaged
    return FlipAveraged(runner)


def logit(p):
    """log(p / (1 - p)), finite for p of 0 and 1."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def make_runner(model, backend="auto", precision="auto", model_path=None, cache_dir=None,
                request_batch=conversion.REQUEST_BATCH, key=None, threshold=None, output=None,
                tta=False):
    """A runner for `model` on `backend` ('auto': OpenVINO if it imports, else Keras).

    `model_path` (the file `model` was loaded from), or a `key` naming the model's contents
    (a (family, *parts) tuple, see cache_name), lets the converted model be cached. A model
    OpenVINO cannot convert runs on Keras, with one line saying so. `request_batch` None sends
    each batch to OpenVINO whole, at an open shape (what bench/bench.py compares against).
    With `threshold` (the decision threshold on the model's one output), a bf16 runner scores
    again in float32 what falls near it (RecheckedRunner); without it, bf16 is bf16 throughout.
    `output`, for a model of several outputs, is the index of the one to run: only what it
    needs is computed, and OpenVINO converts (and caches) the whole model, so runners for its
    other outputs share that conversion. `tta` averages each image's output with its mirror's
    (flip_averaged); the runner's name says so.
    """
    runner = _make_runner(model, backend, precision, model_path, cache_dir, request_batch, key,
                          threshold, output)
    return flip_averaged(runner) if tta else runner


def check_backend(backend="auto", precision="auto"):
    """Whether `backend` and `precision` can run here: True for OpenVINO, False for Keras, or
    the error that says why not. The scripts call it before loading a model, so a bad flag
    fails in a moment."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    use_openvino = backend == "openvino" or (backend == "auto" and conversion.openvino_available())
    if backend == "openvino" and not conversion.openvino_available():
        raise MissingDependency("--backend openvino: OpenVINO is not installed; "
                                "pip install openvino, or pass --backend keras")
    if precision == "bf16" and backend == "keras":
        raise UsageError(f"--precision {precision} needs the OpenVINO backend; Keras runs "
                         "float32 only: leave out --backend keras or --precision")
    if precision == "bf16" and not use_openvino:
        raise MissingDependency(f"--precision {precision} needs the OpenVINO backend, which is "
                                "not installed here: pip install openvino")
    return use_openvino


def _make_runner(model, backend, precision, model_path, cache_dir, request_batch, key,
                 threshold, output):
    use_openvino = check_backend(backend, precision)
    one = model if output is None else conversion.keras_model_of(model, output)
    if not use_openvino:
        return KerasRunner(one)
    try:
        converted = conversion.convert(model, model_path, cache_dir, key)
        if output is not None:
            import openvino as ov
            converted = ov.Model([converted.output(output)], converted.get_parameters())
        runner = openvino_runner(converted, precision, request_batch, threshold)
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        # A traced error's first line only introduces it ("... error: in user code:").
        text = lines[0] + (f" ... {lines[-1]}" if lines[0].endswith(":") else "")
        log.warning(f"note: OpenVINO could not convert the model ({type(err).__name__}: "
                    f"{text}); running it with Keras")
        return KerasRunner(one)
    return runner


def openvino_runner(converted, precision="f32", request_batch=conversion.REQUEST_BATCH,
                    threshold=None):
    """A runner for a converted model (an openvino.Model), compiled as compile_openvino does;
    with `threshold`, a bf16 runner rechecks in float32 what falls near it (RecheckedRunner).
    'auto' is that where the CPU has bfloat16 and `threshold` is given, float32 otherwise."""
    if precision == "auto":
        import openvino as ov
        precision = ("bf16" if threshold is not None and conversion.cpu_has_bf16(ov.Core())
                     else "f32")
    fixed, any_size, precision = conversion.compile_openvino(converted, precision, request_batch)
    runner = OpenVINORunner(fixed, any_size, precision, request_batch)
    if precision == "bf16" and threshold is not None:
        exact = OpenVINORunner(None, conversion.compile_openvino(converted, "f32", None)[1], "f32")
        runner = RecheckedRunner(runner, exact, threshold)
    return runner


def load_runner(model_path, backend="auto", precision="auto", cache_dir=None, threshold=None,
                tta=False, safe_mode=True):
    """(runner, input size) for the classifier saved at `model_path`, as make_runner gives it.

    On OpenVINO, a model converted before (the cache holds it for this very file: same path,
    size and modification time) is read back and compiled without importing TensorFlow or
    Keras, which costs seconds and most of a gigabyte; the Keras model is loaded only to
    convert it the first time, or for --backend keras. A model that needed `safe_mode=False`
    (--unsafe) to load could only have been converted with it; its converted form holds no
    code, so reading it back runs none.
    """
    from facegender.model import sidecar
    use_openvino = check_backend(backend, precision)
    sidecar.check_model_file(model_path)
    if use_openvino:
        converted, size = conversion.cached_conversion(model_path, cache_dir)
        if converted is not None:
            runner = openvino_runner(converted, precision, threshold=threshold)
            return (flip_averaged(runner) if tta else runner), size
    # Keras: the first conversion, or --backend keras.
    from facegender.model import network as model_lib
    model = model_lib.load_model(model_path, safe_mode=safe_mode)
    runner = make_runner(model, backend, precision, model_path, cache_dir, threshold=threshold,
                         tta=tta)
    return runner, model_lib.input_size(model)


def prepare_model(model_path, backend="auto", precision="auto", cache_dir=None, safe_mode=True):
    """The input size of the classifier at `model_path`, checked, with its OpenVINO conversion
    in the cache (converted now when it is not): what Ray's driver needs before its actors
    read the conversion. A conversion already cached is only read, not compiled (a second or
    so that the driver would spend on a model it never runs)."""
    from facegender.model import sidecar
    sidecar.check_model_file(model_path)
    if check_backend(backend, precision):
        converted, size = conversion.cached_conversion(model_path, cache_dir)
        if converted is not None:
            return size
    return load_runner(model_path, backend, precision, cache_dir, safe_mode=safe_mode)[1]


# ---------------------------------------------------------------------------
# Decoding ahead of the model

def decoded_batches(paths, reader, batch_size, threads=None):
    """Yield (start, uint8 images, readable flags) for consecutive batches of `paths`.

    `reader` is a decoding.ImageReader, the one decoder of files into the model's input; a pool of
    threads runs it (Pillow releases the GIL while it decodes and resizes) at most
    PREFETCH_BATCHES batches ahead, so memory stays bounded on any number of files. An
    unreadable file gives a black image, flagged unreadable, and its reason in `reader.skipped`.
    """
    threads = threads or max(2, os.cpu_count() or 1)
    with workers.thread_pool(threads, "decode") as pool:
        pending = collections.deque()
        starts = iter(range(0, len(paths), batch_size))
        for start in starts:
            pending.append((start, [pool.submit(reader, p) for p in
                                    paths[start:start + batch_size]]))
            if len(pending) < PREFETCH_BATCHES:
                continue
            yield _collect(*pending.popleft())
        while pending:
            yield _collect(*pending.popleft())


def _collect(start, futures):
    results = [workers.result(f, "a decoding thread") for f in futures]
    return (start, np.stack([image for image, _ in results]),
            np.array([ok for _, ok in results], dtype=bool))


def run_paths(runner, paths, image_size, batch_size=32, verbose=1, prepare=None, reader=None,
              label=""):
    """Yield (start, output, readable flags) for consecutive batches of `paths`, in order.

    `prepare` maps a float32 batch to what the model is given (e.g. the batch and its mirror).
    `reader` decodes the files (a decoding.ImageReader of `image_size`, cutting faces to the
    model's geometry; default: the images as given). `label` names the progress bar.
    Readable flags come with each batch; when the generator is exhausted, its return value
    (StopIteration.value) is the {path: reason} of every unreadable file.
    """
    reader = reader or decoding.ImageReader(image_size)
    flags = {}

    def feed():
        for start, images, readable in decoded_batches(paths, reader, batch_size):
            flags[start] = readable
            batch = images.astype(np.float32)
            yield start, batch if prepare is None else prepare(batch)

    progress = Progress(len(paths), verbose, label=label)
    for start, output in runner.map(feed()):
        readable = flags.pop(start)
        progress.update(len(readable))
        yield start, output, readable
    return reader.skipped


def score_paths(runner, paths, image_size, batch_size=32, verbose=1, tta=False, reader=None,
                label=""):
    """(P(male) for each of `paths`, {unreadable path: reason}).

    Scores of unreadable files are NaN, so nothing downstream can mistake them for a score (a
    model that outputs NaN for a readable image is an error, not an unreadable file). `tta`
    scores each image as the mean of its score and its mirror's (a no-op for a runner made
    with it). `reader` and `label`: as for run_paths.
    """
    runner = flip_averaged(runner) if tta else runner
    scores = np.full(len(paths), np.nan, np.float32)
    batches = run_paths(runner, paths, image_size, batch_size, verbose, reader=reader,
                        label=label)
    while True:
        try:
            start, output, readable = next(batches)
        except StopIteration as end:
            return scores, dict(end.value)
        out = np.asarray(output, np.float32).reshape(len(readable), -1)[:, 0]
        bad = readable & ~np.isfinite(out)
        if bad.any():
            raise ModelError(f"the model gives {out[bad][0]} for {paths[start + np.argmax(bad)]}; "
                             "its weights are broken, retrain or pass another --model_path")
        scores[start:start + len(readable)] = np.where(readable, out, np.nan)


def score_images(runner, images, batch_size=32, tta=False):
    """P(male) for each of `images`, a (n, size, size, 3) array (e.g. face crops), in batches."""
    runner = flip_averaged(runner) if tta else runner
    batch = np.asarray(images, np.float32)
    chunks = ((i, batch[i:i + batch_size]) for i in range(0, len(batch), batch_size))
    outputs = [np.asarray(out, np.float32).reshape(-1) for _, out in runner.map(chunks)]
    return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)
