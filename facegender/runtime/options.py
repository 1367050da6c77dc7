"""How to run a saved model: `RunOptions`, the choices that predict.py and test_script.py share
(the model file, its threshold, the backend and precision, flip averaging, batches, progress,
the cache), with their defaults and ranges stated once. `EvalConfig` and `LabelConfig` extend
it; facegender.cli.options builds the shared flags from it."""

import dataclasses
import os
import sysconfig

from facegender.core.common import UsageError, default_cache_dir


def shipped_model(name="model_balanced.h5"):
    """The model shipped with the toolkit: at the root of the repository that holds this package
    (a clone, or `pip install -e .`), else where `pip install .` put it with its sidecar
    (pyproject.toml's data-files: <the environment>/share/facegender)."""
    in_repository = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), name)
    installed = os.path.join(sysconfig.get_path("data"), "share", "facegender", name)
    return installed if not os.path.exists(in_repository) and os.path.exists(installed) \
        else in_repository


SHIPPED_MODEL = shipped_model()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to load and run a saved classifier (see `python predict.py --help`)."""
    model_path: str = SHIPPED_MODEL
    threshold: float | None = None  # None: the sidecar's, else 0.5
    batch_size: int = 32
    backend: str = "auto"
    precision: str = "auto"
    tta: bool = False
    unsafe: bool = False
    verbose: int = 1
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)

    def __post_init__(self):
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UsageError("--threshold must be between 0 and 1")
        if self.batch_size < 1:
            raise UsageError("--batch_size must be at least 1")


def defaults_of(config_class):
    """{field: its default} of a config dataclass's fields that have one (what a parser
    shows), so each default is stated once, in the dataclass."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(config_class)
            if f.init and (f.default is not dataclasses.MISSING
                           or f.default_factory is not dataclasses.MISSING)}
