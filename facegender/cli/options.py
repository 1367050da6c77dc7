"""What the scripts share on the command line: the flags that load and run a saved model, and
how every script ends (bad input is one line of error and exit code 2, never a traceback)."""

import argparse
import os
import sys

from facegender.core.common import USER_ERRORS, StuckWorker, UsageError, default_cache_dir
from facegender.core.messages import show_messages
from facegender.runtime import inference
from facegender.runtime.options import RunOptions, defaults_of

RUN_DEFAULTS = defaults_of(RunOptions)  # the shared flags' defaults, stated once: in RunOptions


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's default stated once: "(default: X)" is added to its help unless the help
    already says what the default is, or there is nothing to state (None, off, empty)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or "%(default)" in text or not action.option_strings
                or action.default in (None, False, [], argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def parser(description, groups):
    """An ArgumentParser with HelpFormatter and one argument group per title in `groups`, in
    that order; returns (parser, {title: group})."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    return p, {title: p.add_argument_group(title) for title in groups}


def add_model_arguments(model, engine):
    """--model_path, --threshold, --tta, --unsafe into the `model` group; --batch_size,
    --backend, --precision, --verbose, --cache_dir into the `engine` group."""
    model.add_argument("--model_path", default=RUN_DEFAULTS["model_path"],
                       help="saved model (its JSON sidecar beside it gives the threshold)")
    model.add_argument("--threshold", type=float, default=RUN_DEFAULTS["threshold"],
                       help="decision threshold on P(male) (default: the sidecar's, else 0.5)")
    model.add_argument("--tta", action=argparse.BooleanOptionalAction,
                       default=RUN_DEFAULTS["tta"],
                       help="test-time flip averaging: score each image as the mean of the "
                            "model's score on it and on its horizontal mirror (twice the "
                            "compute)")
    model.add_argument("--unsafe", action="store_true",
                       help="allow a model file that carries code (Lambda layers): only for "
                            "files you trust")
    engine.add_argument("--batch_size", type=int, default=RUN_DEFAULTS["batch_size"],
                        help="images scored at a time")
    engine.add_argument("--backend", choices=inference.BACKENDS,
                        default=RUN_DEFAULTS["backend"],
                        help="what runs the model: auto is OpenVINO when installed, else Keras")
    engine.add_argument("--precision", choices=inference.PRECISIONS,
                        default=RUN_DEFAULTS["precision"],
                        help="auto: OpenVINO's faster bfloat16 mode where the CPU has it "
                             "(AVX-512 bf16 or AMX), with the scores near the threshold computed "
                             "again in float32, so labels are float32's; float32 elsewhere. "
                             "bf16: the same, asked for (a note where the CPU lacks it). f32: "
                             "float32 throughout, the scores Keras gives")
    engine.add_argument("--verbose", type=int, default=RUN_DEFAULTS["verbose"], choices=[0, 1, 2],
                        help="progress output: 0 none, 1 a bar, 2 a line every tenth")
    add_cache_argument(engine)


def add_cache_argument(p):
    """--cache_dir: the one root of every cache, for every script."""
    p.add_argument("--cache_dir", default=default_cache_dir(),
                   help="where caches are kept: converted OpenVINO models and training's "
                        "backbone features; $FACEGENDER_CACHE sets the default, else "
                        "~/.cache/facegender")


def config_from(p, config_class, argv):
    """`config_class` built from the command line parsed by `p`; the config checks its own
    ranges, and a value out of range is `p.error` (one line, exit code 2)."""
    try:
        return config_class(**vars(p.parse_args(argv)))
    except UsageError as err:
        p.error(str(err))


def exit_code(work, *arguments):
    """Call `work(*arguments)`; return 0, or 2 after one line on stderr for unusable data or model,
    options that do not go together, a missing package (the message names the file, flag or
    package and the fix) or a path the system refuses; 1, silently, when the reader of the
    output stopped reading (`| head`). A stuck worker ends the process at once
    with exit code 3 after its line: its thread can never be joined, so a normal exit (which
    waits for every worker thread) would hang. The package's messages are shown while it runs
    (core.messages)."""
    printable_names()
    show_messages()
    try:
        work(*arguments)
    except StuckWorker as err:
        print(f"error: {err}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of the output (`| head`) stopped reading: nothing is wrong with the
        # paths, and nothing more can be shown. The process ends here, as after a stuck
        # worker: a normal exit would flush stdout into the closed pipe again, and tearing
        # down the models the unwound run still holds aborted it once in three ("terminate
        # called without an active exception").
        sys.stderr.flush()
        os._exit(1)
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
