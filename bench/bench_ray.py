"""predict.py --engine ray against the plain predict.py, on the same folder, in one run.

    python bench/bench_ray.py [--data_path ../faces/celeba/dev] [--two_nodes]

Each run is the whole command a user types (a fresh process: imports, model load, Ray's start
and its actors' included), timed from start to exit; the target is ray >= 0.85x plain on one
machine. --two_nodes also starts a Ray head and a second node on this machine (loopback), runs
the job on that cluster, prints the rows each node scored, then stops both nodes (by the ids
of the processes it started: `ray stop` would also end every other Ray on the machine).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
RAY = os.path.join(os.path.dirname(PYTHON), "ray")


# A driver on Linux swaps a 127.0.0.1 address for the machine's public one, where nodes started
# on loopback do not listen; this (public) switch makes it keep loopback. Ray 2.60 clusters
# started by `ray start` require a token (~/.ray/auth_token), which joiners send only in
# token mode.
NODE = {**os.environ, "RAY_AUTH_MODE": "token"}
LOOPBACK = {**NODE, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # not for `ray start`: it refuses


def timed(command, env=None):
    """(seconds, stdout) of a command that must succeed."""
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.time() - start, done.stdout


def image_files(folder):
    from facegender.data import listing
    return listing.list_image_files(folder)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_nodes(address, n, timeout=120):
    """Block until the cluster at `address` has `n` live nodes."""
    code = ("import ray, time; ray.init(address=%r, logging_level='ERROR'); t = time.time()\n"
            "while sum(x['Alive'] for x in ray.nodes()) < %d and time.time() - t < %d: "
            "time.sleep(0.5)\nprint(sum(x['Alive'] for x in ray.nodes()))" % (address, n, timeout))
    alive = int(subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                               check=True, env=LOOPBACK).stdout.split()[-1])
    if alive < n:
        sys.exit(f"only {alive} of {n} Ray nodes came up within {timeout} s")


def two_nodes(flags, files):
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block",
              "--disable-usage-stats"]
    nodes = []
    with tempfile.TemporaryDirectory(prefix="ray-") as tmp:
        try:
            nodes.append(subprocess.Popen([RAY, "start", "--head", "--port", str(port),
                                           "--include-dashboard", "false", "--temp-dir", tmp]
                                          + common, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=NODE))
            for _ in range(120):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.5)
            nodes.append(subprocess.Popen([RAY, "start", "--address", address] + common,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=NODE))
            wait_for_nodes(address, 2)
            seconds, out = timed(flags + ["--engine", "ray", "--ray_address", address],
                                 env=LOOPBACK)
        finally:
            for node in reversed(nodes):  # the --block process stops what it started
                node.terminate()
            for node in reversed(nodes):
                try:
                    node.wait(60)
                except subprocess.TimeoutExpired:
                    node.kill()
    print(f"two nodes on loopback: {files / seconds:.1f} images/s ({seconds:.1f} s)")
    print("  " + next(line for line in out.splitlines() if line.startswith("rows per node")))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_path", default=os.path.join(ROOT, "..", "faces", "celeba", "dev"))
    p.add_argument("--model_path", default=os.path.join(ROOT, "model_balanced.h5"))
    p.add_argument("--two_nodes", action="store_true")
    args = p.parse_args()
    found = image_files(args.data_path)
    files = len(found)
    with tempfile.TemporaryDirectory() as out:
        flags = [PYTHON, "predict.py", args.data_path, "--model_path", args.model_path,
                 "--verbose", "0", "--output", os.path.join(out, "p.csv")]
        timed(flags[:2] + found[:1] + flags[3:])  # warms the conversion cache
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"{files} images in {args.data_path}; {os.cpu_count()} CPUs, load {load}")
        plain, _ = timed(flags)
        with open(flags[-1]) as f:
            plain_rows = f.read()
        ray, out_ray = timed(flags + ["--engine", "ray"])
        with open(flags[-1]) as f:
            same = f.read() == plain_rows
        print(f"plain predict.py:    {files / plain:6.1f} images/s ({plain:.1f} s)")
        print(f"--engine ray:        {files / ray:6.1f} images/s ({ray:.1f} s)")
        print(f"ray / plain:         {plain / ray:.2f}x (target >= 0.85x); the CSVs are "
              + ("identical" if same else "DIFFERENT"))
        if args.two_nodes:
            two_nodes(flags, files)


if __name__ == "__main__":
    main()
