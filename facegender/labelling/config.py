"""What a labelling run is asked to do: `LabelConfig`, one frozen record of the flags of
`predict.py` with their defaults and ranges (facegender.cli.predict's parser takes the defaults
from here), passed, unchanged, to the plain run and to every Ray actor alike."""

import dataclasses

from facegender.core.common import UsageError
from facegender.runtime.options import RunOptions

JOIN_TIMEOUT = 60.0  # seconds a Ray cluster gets to let us in (--ray_join_timeout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelConfig(RunOptions):
    """Every choice of one labelling run: see `python predict.py --help` for each one (the
    model's are RunOptions')."""
    paths: list
    output: str = "predictions.csv"
    detect_faces: bool = False
    min_face_size: int = 40
    engine: str = "plain"
    ray_address: str | None = None
    ray_join_timeout: float = JOIN_TIMEOUT
    annotate: str | None = None
    every: float = 0.5
    report: str | None = None
    audit_sample: str | None = None
    # Set (with detect_faces) once videos are found among the inputs: their rows carry a time,
    # so photos' rows get an empty one.
    videos: bool = False
    # Set once the model's face geometry is known (searches_faces): whether every image is
    # searched for a face, so the CSV has a face_found column. None: as detect_faces.
    searched: bool | None = None
    # The command line, as the audit's summary and page record it (None: not run from one).
    command: str | None = None

    @property
    def faces_searched(self):
        """Whether the images are searched for faces (the CSV's face_found column)."""
        return self.detect_faces if self.searched is None else self.searched

    def __post_init__(self):
        super().__post_init__()
        if self.min_face_size < 1:
            raise UsageError("--min_face_size must be at least 1")
        if not self.every > 0:
            raise UsageError("--every must be a number of seconds above 0")
        if self.report and not self.report.lower().endswith((".html", ".htm")):
            raise UsageError(f"--report {self.report}: must end in .html")
        if self.ray_address and self.engine != "ray":
            raise UsageError("--ray_address needs --engine ray")
        if not self.ray_join_timeout > 0:
            raise UsageError(f"--ray_join_timeout {self.ray_join_timeout:g}: must be above 0 "
                             "seconds")
