"""What the scripts share on the command line: the flags that load and run a saved model, and
how every script ends (bad input is one line of error and exit code 2, never a traceback)."""

import argparse
import os
import sys

import inference
from common import USER_ERRORS, StuckWorker, default_cache_dir

SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_balanced.h5")


def add_model_arguments(p):
    """--model_path, --threshold, --batch_size, --backend, --precision, --tta, --unsafe,
    --verbose, --cache_dir."""
    p.add_argument("--model_path", default=SHIPPED_MODEL,
                   help="saved model (its JSON sidecar beside it gives the threshold)")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold on P(male) (default: the sidecar's, else 0.5)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--backend", choices=inference.BACKENDS, default="auto",
                   help="what runs the model: auto is OpenVINO when installed, else Keras")
    p.add_argument("--precision", choices=inference.PRECISIONS, default="auto",
                   help="auto: OpenVINO's faster bfloat16 mode where the CPU has it (AVX-512 "
                        "bf16 or AMX), with the scores near the threshold computed again in "
                        "float32, so labels are float32's; float32 elsewhere. bf16: the same, "
                        "asked for (a note where the CPU lacks it). f32: float32 throughout, "
                        "the scores Keras gives")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                   help="test-time flip averaging: score each image as the mean of the model's "
                        "score on it and on its horizontal mirror (twice the compute)")
    p.add_argument("--unsafe", action="store_true",
                   help="allow a model file that carries code (Lambda layers): only for files "
                        "you trust")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="progress output: 0 none, 1 a bar, 2 a line every tenth")
    add_cache_argument(p)


def add_cache_argument(p):
    """--cache_dir: the one root of every cache, for every script."""
    p.add_argument("--cache_dir", default=default_cache_dir(),
                   help="where caches are kept: converted OpenVINO models and training's "
                        "backbone features; $FACEGENDER_CACHE sets the default, else "
                        "~/.cache/facegender")


def check_model_arguments(p, args):
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        p.error("--threshold must be between 0 and 1")
    if args.batch_size < 1:
        p.error("--batch_size must be at least 1")


def exit_code(work, *args):
    """Call `work(*args)`; return 0, or 2 after one line on stderr for unusable data or model,
    options that do not go together, a missing package (the message names the file, flag or
    package and the fix) or a path the system refuses. A stuck worker ends the process at once
    with exit code 3 after its line: its thread can never be joined, so a normal exit (which
    waits for every worker thread) would hang."""
    printable_names()
    try:
        work(*args)
    except StuckWorker as err:
        print(f"error: {err}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or ''}: {err.strerror}; check the path and its permissions",
              file=sys.stderr)
        return 2
    return 0


def printable_names():
    """Print any file name: one that is not valid UTF-8 (old archives, network shares) holds
    lone surrogates once decoded (os.fsdecode), which a strict stdout refuses with a
    UnicodeEncodeError; they are shown as backslash escapes instead (caf\\udce9.jpg)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
