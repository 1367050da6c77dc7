"""No run can hang: OpenVINO's first inference is made before any thread races for it, and every
wait of ours on a worker ends, after a bounded time, in an error that names the worker."""

import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from facegender.core import common
from facegender.data import decoding
from facegender.faces import finder as faces
from facegender.runtime import conversion
from facegender.core import workers
from conftest import ROOT

needs_openvino = pytest.mark.skipif(not conversion.openvino_available(), reason="needs OpenVINO")

# A fresh process finds faces on two threads at once, both making their first inference
# together: the race that deadlocked inside OpenVINO's Python binding (1 run in 40 here).
FIRST_CALLS_AT_ONCE = """
import threading
import numpy as np
from facegender.faces import finder as faces
finder = faces.OpenVINOFaceFinder()
rng = np.random.default_rng(0)
side = faces.CROP_DETECT_SIDE
images = [rng.integers(0, 255, (side, side, 3), np.uint8) for _ in range(8)]
threads = [threading.Thread(target=finder.find, args=(images,)) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")
"""


@needs_openvino
@pytest.mark.slow
def test_fresh_processes_finding_faces_on_two_threads_at_once_all_finish():
    faces.OpenVINOFaceFinder()  # the networks converted into the test run's cache, once
    hung = []
    for _ in range(8):  # two processes at a time, sixteen in all
        runs = [subprocess.Popen([sys.executable, "-c", FIRST_CALLS_AT_ONCE], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        for run in runs:
            try:
                out, err = run.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                run.kill()
                hung.append(run.pid)
                continue
            assert run.returncode == 0 and out.strip() == "done", err[-2000:]
    assert not hung, f"{len(hung)} of 16 fresh processes hung at their first detections"


class BlockedFinder:
    """A face finder whose every call waits until released: a worker that never returns."""

    batches_at_once = 2

    def __init__(self):
        self.release = threading.Event()

    def find(self, images, min_face_size=20):
        self.release.wait()
        return [[] for _ in images]


def test_a_stuck_face_finder_is_an_error_naming_it_not_a_hang(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (i * 60, 90, 120)).save(path)
        paths.append(str(path))
    finder, raised = BlockedFinder(), []

    def find():
        try:
            faces.find_faces(paths, str(tmp_path / "cache"), decoding.open_rgb, verbose=0,
                             finder=finder, timeout=1)
        except common.StuckWorker as err:
            raised.append(err)

    caller = threading.Thread(target=find, daemon=True)
    caller.start()
    caller.join(timeout=120)
    finder.release.set()  # let the blocked worker thread end with the test
    assert not caller.is_alive(), "find_faces waited on a stuck face finder for 2 minutes"
    assert raised and "face-finding thread" in str(raised[0]) and "1 s" in str(raised[0])


class SilentQueue:
    """An AsyncInferQueue stand-in of one request that starts work and never finishes it."""

    def __init__(self):
        self.started = []

    def __len__(self):
        return 1

    def start_async(self, inputs, userdata):
        self.started.append(userdata)


def test_an_openvino_request_that_never_finishes_is_an_error_not_a_hang():
    inflight = workers.Inflight(SilentQueue(), "an OpenVINO inference request")
    inflight.start({0: np.zeros(1)}, 0, timeout=0.2)  # the one request is free
    with pytest.raises(common.StuckWorker, match="OpenVINO inference request"):
        inflight.start({0: np.zeros(1)}, 1, timeout=0.2)  # waits for it: never free again
    with pytest.raises(common.StuckWorker):
        inflight.wait_all(timeout=0.2)
    inflight.finished()
    inflight.wait_all(timeout=0.2)  # finished: no wait
    assert inflight.queue.started == [0]


# A script whose worker is stuck: the thread can never be joined, and a normal exit (which
# joins every worker thread) would wait on it forever.
STUCK_SCRIPT = """
import sys, threading
from facegender.cli import options as cli
from facegender.core import common
threading.Thread(target=threading.Event().wait).start()  # a worker that never ends
def work():
    raise common.StuckWorker("a face-finding thread gave no result in 1 s and is stuck")
sys.exit(cli.exit_code(work))
"""


def test_a_script_with_a_stuck_worker_exits_with_one_line_instead_of_waiting_for_it():
    done = subprocess.run([sys.executable, "-c", STUCK_SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3
    assert done.stderr.strip() == ("error: a face-finding thread gave no result in 1 s and is "
                                   "stuck")
