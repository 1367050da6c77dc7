"""What a training run is asked to do: `TrainConfig`, one frozen record of every choice, read,
never changed, by the training code.

Its fields are the flags of `train_model.py`, with their defaults: the one place they are
stated (facegender.cli.train's parser takes them from here), and the one place their ranges
are checked (a value out of range is a UsageError naming the flag). `geometry` is derived: the
parsed --face_geometry. It imports nothing heavier than the face geometry's dataclass, so the
command line answers --help without TensorFlow.

    config = TrainConfig(data_path=["my_faces"], epochs=3)     # from Python
    config = TrainConfig.of_recipe("fast", data_path=["my_faces"])
"""

import dataclasses
import os

from facegender.core.common import UsageError, default_cache_dir
from facegender.faces.finder import DEFAULT_GEOMETRY, Geometry, parse_geometry
from facegender.model.sidecar import sidecar_path

# Flag presets. `reference` is the recipe this toolkit reproduces. `fast` is made for CPUs: the
# head is first trained in seconds on cached backbone features, then the top blocks for a few
# minutes on cached feature maps of the blocks below, then the whole network is fine-tuned with
# augmentation at a higher learning rate and a smaller input (160 px costs half the compute of
# 224). Flags given on the command line override a preset.
RECIPES = {
    "reference": {},
    "fast": {"warmup_epochs": 30, "feature_epochs": 3, "image_size": 160,
             "learning_rate": 3e-5, "epochs": 6, "patience": 3, "lr_patience": 1,
             "lr_factor": 0.3},
}

# What --monitor may watch, and whether lower or higher is better. Keras guesses the direction
# from the name and would guess wrong for macro-F1, so it is always passed explicitly.
MONITOR_MODES = {"val_loss": "min", "val_macro_f1": "max", "val_worst_recall": "max"}

MODEL_EXTENSIONS = (".h5", ".keras")  # what Keras saves a whole model as, by the name


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every choice of one training run: see `python train_model.py --help` for each one.

    The fields are in the parser's order, which is also the order of the sidecar's "config".
    """
    recipe: str = "reference"
    data_path: list
    val_path: list | None = None
    val_limit: int | None = None
    source_weights: list | None = None
    balance_by: list = dataclasses.field(default_factory=list)
    epoch_images: int | None = None
    val_split: float = 0.15
    output: str = "model_balanced.h5"
    weights: str = "imagenet"
    init_model: str | None = None
    trainable_layers: int | None = None
    image_size: int = 224
    face_geometry: str = DEFAULT_GEOMETRY
    batch_size: int = 32
    epochs: int = 25
    learning_rate: float = 1e-5
    focal_alpha: float = 0.5
    focal_gamma: float = 1.5
    oversample: float = 1.0
    augment: bool = True
    zoom: list = dataclasses.field(default_factory=lambda: [-0.2, 0.2])
    as_given: float = 0.0
    grayscale: float = 0.0
    degrade: float = 0.0
    class_weights: list = dataclasses.field(default_factory=lambda: [1.0, 0.9])
    dense_units: int = 128
    dropout: float = 0.3
    monitor: str = "val_loss"
    patience: int = 5
    lr_patience: int = 3
    lr_factor: float = 0.5
    seed: int = 42
    warmup_epochs: int = 0
    warmup_learning_rate: float = 1e-3
    feature_epochs: int = 0
    feature_learning_rate: float = 1e-4
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)
    strategy: str = "default"
    mixed_precision: bool = False
    xla: bool = False
    checkpoint_dir: str | None = None
    resume: bool = False
    allow_output_in_data: bool = False
    overwrite: bool = False
    model_version: str | None = None  # written into the sidecar as "version"
    verbose: int = 1
    # Derived, not given: --face_geometry parsed (None: images used as given).
    geometry: Geometry | None = dataclasses.field(init=False)

    @classmethod
    def of_recipe(cls, recipe, **fields):
        """A config of the RECIPES preset `recipe`, with `fields` overriding it."""
        return cls(recipe=recipe, **{**RECIPES[recipe], **fields})

    def __post_init__(self):
        check_ranges(self)
        if self.epochs == 0:  # nor do a recipe's cached-feature stages
            object.__setattr__(self, "warmup_epochs", 0)
            object.__setattr__(self, "feature_epochs", 0)
        try:
            geometry = parse_geometry(self.face_geometry)
        except UsageError as err:
            raise UsageError(f"--face_geometry: {err}") from None
        object.__setattr__(self, "geometry", geometry)

    def checkpoint_folder(self):
        """Where the per-epoch checkpoints go: --checkpoint_dir, else <output>_checkpoints."""
        return self.checkpoint_dir or os.path.splitext(self.output)[0] + "_checkpoints"

    def written_files(self):
        """Every file the end of a run writes: the model, its sidecar, the curves, the
        architecture (as a picture or as text)."""
        out_dir = os.path.dirname(os.path.abspath(self.output))
        return [self.output, sidecar_path(self.output)] + [
            os.path.join(out_dir, name) for name in ("training_curves.png",
                                                     "model_architecture.png",
                                                     "model_architecture.txt")]


# Each flag's allowed values: (test, what is allowed).
RANGES = {
    "dropout": (lambda v: 0 <= v < 1, "from 0 up to, not including, 1"),
    "lr_factor": (lambda v: 0 < v < 1, "between 0 and 1, both excluded"),
    "dense_units": (lambda v: v >= 1, "at least 1"),
    "learning_rate": (lambda v: v > 0, "above 0"),
    "warmup_learning_rate": (lambda v: v > 0, "above 0"),
    "feature_learning_rate": (lambda v: v > 0, "above 0"),
    "focal_alpha": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "focal_gamma": (lambda v: v >= 0, "0 or more"),
    "oversample": (lambda v: v >= 0, "0 or more"),
    "patience": (lambda v: v >= 0, "0 or more"),
    "lr_patience": (lambda v: v >= 0, "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "feature_epochs": (lambda v: v >= 0, "0 or more"),
    "val_limit": (lambda v: v is None or v >= 2, "at least 2 (one image of each class)"),
    "epoch_images": (lambda v: v is None or v >= 1, "at least 1"),
    "trainable_layers": (lambda v: v is None or v >= 0, "0 or more"),
    "class_weights": (lambda v: min(v) >= 0 and max(v) > 0, "0 or more each, not both 0"),
}


def check_ranges(config):
    """A UsageError naming the first flag out of its range: a value Keras would reject with a
    traceback, or, worse, accept and train a model with. The one place the ranges are
    checked."""
    if not 0 < config.val_split < 1:
        raise UsageError("--val_split must be between 0 and 1")
    if config.epochs < 0 or config.batch_size < 1:
        raise UsageError("--epochs must be at least 0 and --batch_size at least 1")
    if config.epochs == 0 and not (config.init_model or config.resume):
        raise UsageError("--epochs 0 trains nothing: it only tunes the threshold of an "
                         "--init_model (or a --resume'd run) on the validation data")
    if config.image_size < 32:
        raise UsageError("--image_size must be at least 32")
    for flag, (ok, allowed) in RANGES.items():
        value = getattr(config, flag)
        if not ok(value):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            raise UsageError(f"--{flag} {shown}: must be {allowed}")
    check_shares(config)


def check_shares(config):
    """--source_weights (one per --data_path), the shares of images and the zoom range."""
    weights = config.source_weights
    if weights and len(weights) != len(config.data_path):
        raise UsageError("--source_weights takes one weight per --data_path folder")
    if weights and (min(weights) < 0 or sum(weights) <= 0):
        raise UsageError("--source_weights must be non-negative and not all 0")
    if not all(0 <= share <= 1 for share in (config.degrade, config.grayscale, config.as_given)):
        raise UsageError("--degrade, --grayscale and --as_given are shares of the images, "
                         "between 0 and 1")
    if not -1 < config.zoom[0] <= config.zoom[1]:
        raise UsageError("--zoom takes LOW <= HIGH, LOW above -1")
