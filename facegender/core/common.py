"""What every module shares and nothing else: the class names and the rule that calls a score
one of them, the cache root and the error
types that the scripts turn into one line and exit code 2. It imports nothing of the project
(and no TensorFlow), so any module may import it."""

import os

import numpy as np

CLASS_NAMES = ("female", "male")  # class index 0 is female, 1 is male: the model outputs P(male)


def called(p_male, threshold):
    """The class each P(male) is called at the decision `threshold`: 1 (male) at or above it,
    0 (female) below; an int for one score, an int array for an array of them. The one rule
    every script labels by."""
    calls = (np.asarray(p_male) >= threshold).astype(int)
    return int(calls) if calls.ndim == 0 else calls


def called_name(p_male, threshold):
    """The class name one P(male) is called at `threshold` ("female" or "male")."""
    return CLASS_NAMES[called(p_male, threshold)]


def file_stamp(path):
    """[absolute path, size, modification time in ns]: what tells one version of a file from
    another where a cache or a resumed run must not take an old result for a new file."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def default_cache_dir():
    """The root of every cache (converted OpenVINO models, training's backbone features):
    $FACEGENDER_CACHE, else ~/.cache/facegender. Scripts take it as --cache_dir's default."""
    return os.environ.get("FACEGENDER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "facegender")


class DataError(Exception):
    """Data that cannot be used; the message names the path and says what to do."""


class ModelError(Exception):
    """A model or weights file that cannot be used; the message names it and says what to do."""


class UsageError(Exception):
    """Options that do not go together, or ask for what this machine cannot do; the message
    names the flags and what to pass instead."""


class MissingDependency(Exception):
    """An optional package that is not installed (or not at a usable version); the message
    says which feature needs it and the `pip install` that fixes it."""


class StuckWorker(Exception):
    """A worker (a thread of ours, or an OpenVINO request) that gave no result within
    WORKER_TIMEOUT_S; the message names it. A stuck thread cannot be joined, so the scripts
    exit without waiting for it (cli.exit_code)."""


# How long any wait of ours on a worker lasts before it is a StuckWorker: far above the
# slowest batch seen here (a few seconds on two busy cores), so it only ever ends a hang.
WORKER_TIMEOUT_S = 300.0


# What cli.exit_code reports as one line and exit code 2.
USER_ERRORS = (DataError, ModelError, UsageError, MissingDependency)
