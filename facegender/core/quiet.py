"""TensorFlow's start-up lines kept off the terminal.

Importing TensorFlow 2.21 writes absl's "All log messages before absl::InitializeLog()" and
oneDNN's notice straight to file descriptor 2 from C++, whatever TF_CPP_MIN_LOG_LEVEL says, and
a script imports it (through Keras, MTCNN or our modules) wherever it first needs it. So the
scripts call `hide_tensorflow_start_up()` before their other imports: the first import of
`tensorflow`, wherever it happens, runs with descriptor 2 sent to a temporary file, which is
shown only if that import fails. `--verbose 2` calls `show_tensorflow_start_up()`, which takes
the hook out (and prints what it hid, if TensorFlow was imported already).
"""

import importlib.abc
import importlib.util
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's later C++ log lines

_hidden = []  # what the hidden import wrote


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` with descriptor 2 redirected to a file."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                self.loader.exec_module(module)
            except BaseException:
                os.dup2(saved, 2)
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))  # the failure's context
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                # The module keeps its real loader, for whatever asks it for resources.
                module.__loader__ = module.__spec__.loader = self.loader
            sink.seek(0)
            _hidden.append(sink.read().decode(errors="replace"))

    def __getattr__(self, name):  # anything else a loader is asked: the real one answers
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and wraps its loader, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_finder = _Finder()


def hide_tensorflow_start_up():
    """Hide what the first import of TensorFlow writes to the terminal (a no-op once it is
    imported)."""
    if "tensorflow" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def show_tensorflow_start_up():
    """Undo hide_tensorflow_start_up (for --verbose 2), printing anything it already hid."""
    uninstall()
    for text in _hidden:
        sys.stderr.write(text)
    _hidden.clear()


def uninstall():
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def tensorflow_imported():
    """True once this process has imported TensorFlow (what the fast paths avoid)."""
    return "tensorflow" in sys.modules
