"""Does Keras `model.fit` train under MultiWorkerMirroredStrategy with the installed versions?

    python bench/multiworker_check.py

Starts two worker processes on this machine, wired together by TF_CONFIG the way two machines
would be, and fits a one-layer model on each. Prints whether it worked and, if not, the error.
Keras 3 has been reported to fail here since TensorFlow 2.16 (keras-team/keras#20585); run this
after upgrading to see whether that still holds before training on several machines.
"""

import json
import os
import re
import socket
import subprocess
import sys

WORKER = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
x = np.random.default_rng(0).random((256, 4), dtype=np.float32)
ds = tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(32)
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
history = model.fit(ds, epochs=2, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"]}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def error_summary(stderr):
    """The exception line of a traceback, joined to its last line when the message spans several."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()] or ["?"]
    raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    if not raised or raised[-1] == lines[-1]:
        return lines[-1]
    return f"{raised[-1]} ... {lines[-1]}"


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, err = "", "timed out after 300 s"
        results.append((worker.returncode, out, err))
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}: "
          "MultiWorkerMirroredStrategy, model.fit on 2 local workers")
    for index, (code, out, err) in enumerate(results):
        if code == 0:
            print(f"  worker {index}: works, {out.strip()}")
        else:
            print(f"  worker {index}: fails (exit {code}): {error_summary(err)[:300]}")
    return 0 if all(code == 0 for code, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
