"""What an evaluation is asked to do: `EvalConfig`, one frozen record of the flags of
`test_script.py` with their defaults and ranges (facegender.cli.evaluate's parser takes the
defaults from here), read, never changed, by facegender.evaluation.evaluate."""

import dataclasses

from facegender.core.common import UsageError
from facegender.runtime.options import RunOptions


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig(RunOptions):
    """Every choice of one evaluation: see `python test_script.py --help` for each one (the
    model's are RunOptions')."""
    data_path: list
    output_dir: str = "."
    group_by: str | None = None
    no_copy: bool = False
    report: str | None = None
    store_error_rates: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.report and not self.report.lower().endswith((".html", ".htm")):
            raise UsageError(f"--report {self.report}: must end in .html")
        if self.store_error_rates and self.threshold is not None:
            raise UsageError("--store_error_rates counts at the sidecar's threshold, the one "
                             "predict.py uses; leave out --threshold")
