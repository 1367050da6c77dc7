"""Waiting on workers without ever waiting forever.

Every wait of ours on a thread (decoding, face finding) or an OpenVINO request goes through
here and ends after WORKER_TIMEOUT_S with a StuckWorker that names the worker; the scripts then
exit at once (cli.exit_code) instead of waiting on a thread that can never be joined.
"""

import concurrent.futures
import contextlib
import threading

from facegender.core.common import WORKER_TIMEOUT_S, StuckWorker


def stuck(what, timeout):
    return StuckWorker(f"{what} gave no result in {timeout:g} s and is stuck; stopped rather "
                       "than wait forever (a bug: please report it with the command you ran)")


def result(future, what, timeout=None):
    """`future`'s result, waiting at most `timeout` seconds (default WORKER_TIMEOUT_S)."""
    timeout = WORKER_TIMEOUT_S if timeout is None else timeout
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise stuck(what, timeout) from None


@contextlib.contextmanager
def thread_pool(workers, name):
    """A ThreadPoolExecutor of `workers` threads named `name`, shut down on the way out; after
    an error (a StuckWorker above all) without waiting for its threads, which may never end."""
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class Inflight:
    """Counts the requests started on an OpenVINO AsyncInferQueue and those finished (its
    callback calls `finished`), so that waiting for a free request or for all of them is
    bounded: AsyncInferQueue's own waits have no limit."""

    def __init__(self, queue, what):
        self.queue, self.what = queue, what
        self.started = self.done = 0
        self.changed = threading.Condition()

    def finished(self):
        with self.changed:
            self.done += 1
            self.changed.notify_all()

    def start(self, inputs, userdata, timeout=None):
        """queue.start_async(inputs, userdata) once a request is free."""
        self._wait(lambda: self.started - self.done < len(self.queue), timeout)
        self.started += 1
        self.queue.start_async(inputs, userdata)

    def wait_all(self, timeout=None):
        self._wait(lambda: self.done == self.started, timeout)

    def _wait(self, ready, timeout):
        timeout = WORKER_TIMEOUT_S if timeout is None else timeout
        with self.changed:
            if not self.changed.wait_for(ready, timeout):
                raise stuck(self.what, timeout)
