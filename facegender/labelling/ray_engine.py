"""predict.py --engine ray: the same predictions as a Ray job, on this machine or a cluster.

The file list is cut into shards of SHARD_FILES files, in listing order. A pool of Ray actors,
one per node, each holding the model once, runs photos.py's code (what predict.py runs) on
one shard at a time (decode, detect faces, crop, score, threshold) and hands back its rows.
Ray Core's actors and `ray.wait` are all it takes: each shard is one call, so Ray Data's
blocks, its streaming executor and its import (pyarrow, pandas: a second or two per process)
would add cost and nothing else.

The driver writes each finished shard to `<output>.shards/` and records it in the manifest
there, so a killed run, started again with the same command, only does the shards the manifest
does not list. When every shard is in, the CSV is written from them in listing order: the rows
of the plain run, in its order. Images and the model are read by the actors, so every node must
see them at the same paths (a shared file system, or the same copy on each node).
"""

import collections
import csv
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import dataclasses

from facegender.runtime import inference
from facegender.labelling import csv_rows, inputs, photo_faces, photos, results
from facegender.labelling.config import JOIN_TIMEOUT
from facegender.model import sidecar
from facegender.labelling import video
from facegender.core.common import USER_ERRORS, DataError, file_stamp
from facegender.core.messages import warnings_kept
from facegender.core.outputs import write_csv, write_json

log = logging.getLogger(__name__)

# The folder that holds the facegender package (the actors import it from there).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Files per shard: what a killed run can lose, and the unit the nodes share out. 256 files take
# about a second to score here, far more than a shard's overhead.
SHARD_FILES = 256
# The layout of a shard's rows: raise it whenever what a row holds changes (2: face_found and
# the video track), so that a resumed run starts over instead of reusing older shards.
SHARD_FORMAT = 2
# Each actor asks this little of Ray's CPU count: OpenVINO uses every core of its node anyway,
# and a driver started inside a Ray job needs some too.
ACTOR_CPUS = 0.5
# Actors on different nodes (Ray packs small ones onto one node first), not restarted (the
# others do a lost actor's shards).
SPREAD = {"scheduling_strategy": "SPREAD", "max_restarts": 0}
# Shards sent to each actor at a time: a second one waits at the actor, so it never idles
# between shards.
IN_FLIGHT = 2


# ---------------------------------------------------------------------------
# The actor: one model per worker process

class ShardScorer:
    """Loads the model once, then gives photos.py's rows for one shard of files per call.

    The driver converted the model before the actors start, so each reads the conversion from
    the cache, as predict.py does, and imports no TensorFlow (seconds and most of a gigabyte
    per actor).
    """

    def __init__(self, config):
        import ray
        self.config = config
        self.runner, self.size = inference.load_runner(
            config.model_path, config.backend, config.precision, config.cache_dir, config.threshold,
            config.tta, not config.unsafe)
        self.geometry = sidecar.face_geometry(config.model_path)
        self.detector = (photo_faces.load_face_detector(config.cache_dir, config.backend)
                         if config.detect_faces else None)
        context = ray.get_runtime_context()
        self.node = f"{context.get_node_id()[:8]} ({ray.util.get_node_ip_address()})"

    def score(self, paths):
        """photos.py's rows for one shard (a list of files, or one video), with what it
        skipped, the files with no face, this actor's node, its runner's name and the warnings
        said on the way (an unreadable image, a video cut short), for the driver to repeat:
        an actor's own output never reaches the terminal."""
        with warnings_kept() as warnings:
            result = self.score_shard(paths)
        return {**result, "warnings": warnings}

    def score_shard(self, paths):
        if inputs.is_video(paths[0]):  # a video is a shard of its own
            try:
                rows = video.predict_video(self.runner, self.size, paths[0], self.config,
                                           self.config.threshold, self.detector, self.geometry)
            except DataError as err:  # unreadable: named and passed over, as predict.py does
                why = str(err).removeprefix(f"{paths[0]}: ")
                return {"rows": [], "skipped": {paths[0]: why}, "no_face": [],
                        "node": self.node, "runner": self.runner.name}
            return {"rows": rows, "skipped": {}, "no_face": [] if rows else paths,
                    "node": self.node, "runner": self.runner.name}
        if self.config.detect_faces:
            rows, skipped, no_face = photos.predict_faces(
                self.runner, self.size, paths, self.config, self.config.threshold, self.detector,
                self.geometry)
        else:
            rows, skipped, no_face = photos.predict_crops(
                self.runner, self.size, paths, self.config, self.config.threshold, self.geometry)
        if self.config.videos:
            rows = [(row[0], "", *row[1:], "") for row in rows]  # a photo: no time, no track
        return {"rows": rows, "skipped": skipped, "no_face": no_face, "node": self.node,
                "runner": self.runner.name}


# ---------------------------------------------------------------------------
# Connecting

def check_reachable(address, timeout=5.0):
    """Fail in seconds, with one line, when nothing listens at a 'host:port' address (ray.init
    itself retries for a long while); 'auto' and other forms are left to ray.init."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise DataError(f"--ray_address {address}: no Ray cluster answers there "
                        f"({err.strerror or err}); start one with `ray start --head`, or leave "
                        "out --ray_address to run on this machine") from None


def join_within(kwargs, address, timeout):
    """ray.init(**kwargs) given `timeout` seconds. A port that accepts connections but is not
    a Ray cluster that lets us in (one that needs a token, another Ray version, another
    service) makes ray.init retry for minutes, printing as it goes: it runs in a thread
    whose warnings are kept from the terminal, and is given up on at the deadline."""
    import ray
    done, failure = threading.Event(), []

    def join():
        try:
            ray.init(**kwargs)
        except Exception as err:
            failure.append(err)
        finally:
            done.set()

    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)  # Ray's C++ client writes its retries straight to fd 2
    threading.Thread(target=join, name="ray-join", daemon=True).start()
    if not done.wait(timeout):
        # The abandoned attempt goes on writing to fd 2 until the process ends: leave that on
        # /dev/null, and give Python's stderr the terminal back for our one line.
        sys.stderr = os.fdopen(saved, "w")
        raise DataError(f"--ray_address {address}: no Ray cluster let us join within "
                        f"{timeout:g} s (it may need a token, run another Ray version, or not "
                        "be Ray); check the address, raise --ray_join_timeout, or leave out "
                        "--ray_address to run on this machine")
    os.dup2(saved, 2)
    os.close(saved)
    if failure:
        raise failure[0]


def connect(address=None, num_cpus=None, join_timeout=JOIN_TIMEOUT):
    """Start Ray in this process (no address), or join the cluster at `address` within
    `join_timeout` seconds; inside a job started by `ray job submit` (RAY_ADDRESS set) join
    that job's cluster. Returns True when it connected, False when Ray was already initialised
    here (then the caller's, left running)."""
    import ray
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR)
    # The actors import this folder's modules and share the converted-model cache.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    if os.environ.get("FACEGENDER_CACHE"):
        env["FACEGENDER_CACHE"] = os.environ["FACEGENDER_CACHE"]
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        check_reachable(address)
        kwargs = {"address": address, "runtime_env": {"env_vars": env}}
    elif os.environ.get("RAY_ADDRESS"):  # a submitted job: its working dir holds our code
        kwargs = {}
    else:
        kwargs = {"address": "local", "num_cpus": num_cpus, "include_dashboard": False,
                  "runtime_env": {"env_vars": env}}
    try:
        if address:
            join_within({**kwargs, **quiet}, address, join_timeout)
        else:
            ray.init(**kwargs, **quiet)
    except DataError:
        raise
    except Exception as err:  # e.g. 'auto' with no cluster running
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"--ray_address {address or os.environ.get('RAY_ADDRESS')}: could not "
                        f"join the Ray cluster ({text})") from None
    return True


# ---------------------------------------------------------------------------
# Shards and their manifest

def fingerprint(files, config, threshold, shard_files):
    """What a shard's rows depend on: a rerun with another value of any of these starts over.
    Shards written by another version of this code (SHARD_FORMAT, the CSV's columns) too: a
    resumed run must not mix rows of two layouts."""
    what = [files, *file_stamp(config.model_path), threshold,
            config.detect_faces, config.min_face_size, config.tta, config.backend, config.precision,
            shard_files, config.every, SHARD_FORMAT, csv_rows.csv_header(config)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def shard_folder(output):
    return os.path.abspath(output) + ".shards"


def shard_csv(folder, k):
    return os.path.join(folder, f"shard-{k:05d}.csv")


def open_manifest(folder, key, n_files, n_shards, shard_files):
    """The manifest of this run: the one in `folder` when it is for the same run (a resume),
    else a new one (the old shards are removed, with a note)."""
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest.get("fingerprint") == key:
            return manifest
        log.info(f"note: {folder} holds shards of another run (other images or options); "
                 "starting over")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        log.info(f"note: {path} is unreadable ({err}); starting over")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    manifest = {"fingerprint": key, "files": n_files, "shard_files": shard_files,
                "shards": n_shards, "done": {}}
    write_json(path, manifest)
    return manifest


def save_shard(folder, manifest, k, result, header):
    """Write shard k's rows, then record it in the manifest: each file is written atomically,
    and a shard the manifest lists has its rows on disk, so a kill between the two only means
    the shard is done again."""
    write_csv(shard_csv(folder, k), header, result["rows"])
    manifest["done"][str(k)] = {key: result[key] for key in ("skipped", "no_face", "node")}
    manifest["done"][str(k)]["rows"] = len(result["rows"])
    write_json(os.path.join(folder, "manifest.json"), manifest)


def read_shards(folder, manifest):
    """(rows, skipped, no_face) of every shard, in shard order."""
    rows, skipped, no_face = [], {}, []
    for k in range(manifest["shards"]):
        with open(shard_csv(folder, k), newline="", encoding="utf-8",
                  errors="surrogateescape") as f:  # as outputs.write_text wrote it
            rows += [tuple(row) for row in list(csv.reader(f))[1:]]
        skipped.update(manifest["done"][str(k)]["skipped"])
        no_face += manifest["done"][str(k)]["no_face"]
    return rows, skipped, no_face


def original_error(err):
    """The user error (common.USER_ERRORS: bad data, a bad model, a missing package) an actor
    raised, found inside Ray's wrappers, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return type(err)(str(err).strip().splitlines()[-1])
        seen.add(id(err))
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None


# ---------------------------------------------------------------------------
# The job

@dataclasses.dataclass(frozen=True)
class Stopped:
    """A run ended early (run's `stop_after`): `done` of `shards` saved, to be resumed."""
    done: int
    shards: int


def run(config, stop_after=None, shard_files=SHARD_FILES, num_cpus=None):
    """label.label's work as a Ray job (what label.label_on_ray runs): returns its
    results.LabelResult, with the rows per node and the job's time (nodes_text), or Stopped.

    `stop_after` ends the run, as a kill would, once that many shards are saved (for tests).
    """
    start = time.time()
    if config.ray_address:
        check_reachable(config.ray_address)  # before minutes of work, not after
    files, videos = inputs.collect_inputs(config.paths)
    threshold, source = sidecar.decision_threshold(config.model_path, config.threshold)
    geometry = sidecar.face_geometry(config.model_path)
    config = dataclasses.replace(config, searched=photos.searches_faces(config, geometry))
    # Loaded here once: a bad model stops the run before Ray starts, and the model is
    # converted into the cache, where the actors on this node find it.
    size = inference.prepare_model(config.model_path, config.backend, config.precision,
                                   config.cache_dir, not config.unsafe)
    if config.detect_faces:  # a broken detector stops the run here, before any work; on
        # OpenVINO its networks are converted into the cache, where the actors find them.
        photo_faces.load_face_detector(config.cache_dir, config.backend)

    # A video is one shard (one task): a killed run continues it from its progress record
    # (video.py), beside the output, where the actors of this machine write it.
    shards = [files[i:i + shard_files] for i in range(0, len(files), shard_files)]
    shards += [[path] for path in videos]
    folder = shard_folder(config.output)
    manifest = open_manifest(folder, fingerprint(files + videos, config, threshold, shard_files),
                             len(files) + len(videos), len(shards), shard_files)
    header = csv_rows.csv_header(config)
    todo = [k for k in range(len(shards)) if str(k) not in manifest["done"]]
    what = photos.what_is_predicted(config, files, videos, geometry)
    log.info(f"predicting {what} at {size}x{size} with Ray, threshold "
             f"{threshold:.2f} ({source}); {len(shards)} shards of up to {shard_files} files, "
             f"{len(shards) - len(todo)} already done in {folder}")
    if todo:
        stopped = run_shards(config, shards, todo, threshold, folder, manifest, header,
                             stop_after, num_cpus)
        if stopped:
            return Stopped(len(manifest["done"]), len(shards))

    rows, skipped, no_face = read_shards(folder, manifest)
    result = results.write_run(config, files, videos, rows, skipped, no_face, threshold, source)
    per_node = {}
    for shard in manifest["done"].values():
        per_node[shard["node"]] = per_node.get(shard["node"], 0) + shard["rows"]
    shutil.rmtree(folder)  # the CSV is whole: the shards are no longer needed
    return dataclasses.replace(result, per_node=per_node, seconds=time.time() - start)


def nodes_text(result):
    """The rows each node scored, the job's time and its pace in files (photos) a second."""
    return ("rows per node: " + ", ".join(f"{node} {n}" for node, n in
                                          sorted(result.per_node.items()))
            + f"; {result.seconds:.1f} s, {result.photos / result.seconds:.1f} files/s")


def run_shards(config, shards, todo, threshold, folder, manifest, header, stop_after, num_cpus):
    """Score the shards in `todo` on Ray, saving each as it comes back; True when stopped early."""
    import ray
    started = connect(config.ray_address, num_cpus, config.ray_join_timeout)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        # The actors' config: the threshold chosen here, no progress bars, and the output
        # (where videos' progress records go) as an absolute path, for any node's working dir.
        options = dataclasses.replace(config, threshold=threshold, verbose=0,
                                      output=os.path.abspath(config.output))
        scorer = ray.remote(ShardScorer).options(num_cpus=ACTOR_CPUS, **SPREAD)
        actors = [scorer.remote(options) for _ in range(min(len(nodes), len(todo)))]
        log.info(f"on {len(nodes)} Ray node(s), one actor each")
        waiting, running = collections.deque(todo), {}  # running: call -> (actor, shard)

        def send(actor):
            if waiting:
                k = waiting.popleft()
                running[actor.score.remote(shards[k])] = (actor, k)

        for actor in actors:
            for _ in range(IN_FLIGHT):
                send(actor)
        saved, files_done, t0 = 0, 0, time.time()
        while running:
            [call], _ = ray.wait(list(running), num_returns=1)
            actor, k = running.pop(call)
            try:
                result = ray.get(call)
            except ray.exceptions.RayActorError:
                # A lost node or a killed actor: its shards go to the others.
                waiting.appendleft(k)
                actors.remove(actor)
                for other in [c for c, (a, _) in running.items() if a is actor]:
                    waiting.appendleft(running.pop(other)[1])
                if not actors:
                    raise DataError("every Ray actor was lost; run the same command again to "
                                    "continue from the saved shards") from None
                for other in actors:  # topped up, so the requeued shards are sent
                    while waiting and sum(a is other for a, _ in running.values()) < IN_FLIGHT:
                        send(other)
                continue
            except Exception as err:
                known = original_error(err)
                if known is None:
                    raise
                raise known from None
            for text in result["warnings"]:
                log.warning(text)
            save_shard(folder, manifest, k, result, header)
            saved += 1
            files_done += len(shards[k])
            if config.verbose:
                log.info(f"  shard {len(manifest['done'])}/{len(shards)}: {files_done} files in "
                         f"{time.time() - t0:.1f} s on {result['runner']}")
            if stop_after is not None and saved >= stop_after:
                return True
            send(actor)
        return False
    finally:
        if started:
            ray.shutdown()
