"""The package's layout holds: one-way floors and no circle, thin front doors whose --help
needs no TensorFlow, configs instead of argparse namespaces, short functions, one import path
per name, facades that reach the real code, and models saved before the move still loading."""

import ast
import glob
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from docs import draw_imports

PACKAGE_FILES = sorted(glob.glob(os.path.join(ROOT, "facegender", "**", "*.py"), recursive=True))
SCRIPTS = ("predict.py", "test_script.py", "train_model.py", "export.py")
# The flat layout's module names: the package must not import any of them (data and losses
# are the root's facades over it, the others no longer exist at the root).
ROOT_MODULES = {"data", "losses", "predict", "test_script", "train_model", "export"}


def parsed(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def functions(tree):
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_every_import_goes_down_a_floor_and_the_picture_is_current():
    assert draw_imports.broken_floors() == []
    done = subprocess.run([sys.executable, os.path.join("docs", "draw_imports.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr


def test_circles_are_found():
    # The check above can only pass if it would see one.
    assert draw_imports.circles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [
        ["a", "b", "c", "a"]]
    assert draw_imports.circles({("a", "b"), ("b", "c")}) == []


def test_no_function_of_the_package_takes_args_or_runs_over_80_lines():
    too_long, takes_args = [], []
    for path in PACKAGE_FILES:
        for node in functions(parsed(path)):
            where = f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}"
            if node.end_lineno - node.lineno + 1 > 80:
                too_long.append(where)
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            if any(p is not None and p.arg == "args" for p in params):
                takes_args.append(where)
    assert too_long == [] and takes_args == []


def test_only_the_front_doors_print():
    # Library code returns its results and logs what it is doing (core.messages); the command
    # lines in cli/ print. The progress bar writes to the terminal by design (--verbose).
    printing = []
    for path in PACKAGE_FILES:
        where = os.path.relpath(path, ROOT)
        if where.startswith(os.path.join("facegender", "cli", "")) or where == os.path.join(
                "facegender", "core", "progress.py"):
            continue
        printing += [f"{where}:{node.lineno}" for node in ast.walk(parsed(path))
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                     and node.func.id == "print"]
    assert printing == []


def test_the_package_imports_no_root_module_and_nothing_edits_sys_path():
    flat = []
    for path in PACKAGE_FILES:
        for node in ast.walk(parsed(path)):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            flat += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names
                     if n and n.split(".")[0] in ROOT_MODULES]
    assert flat == []
    edits = [path for folder in ("facegender", "tests", "bench", "docs")
             for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)
             if re.search(r"sys\.path\.(insert|append)\(", open(path).read())]
    assert edits == []


def test_help_of_every_script_answers_without_tensorflow():
    for name in SCRIPTS:
        done = subprocess.run([sys.executable, "-X", "importtime", name, "--help"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, (name, done.stderr[-2000:])
        imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                    for line in done.stderr.splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert not {"tensorflow", "keras"} & imported, name
        assert "(default: None)" not in done.stdout, name


def test_every_flag_has_help_and_a_group():
    from facegender.cli import evaluate, export, predict, train
    for module in (evaluate, export, predict, train):
        p = module.build_parser()
        helpless = [a.dest for a in p._actions if not a.help]
        ungrouped = [a.dest for group in p._action_groups
                     if group.title in ("options", "optional arguments")
                     for a in group._group_actions if a.dest != "help"]
        assert helpless == [] and ungrouped == [], module.__name__


def test_each_default_is_stated_once():
    from facegender.cli import options
    p, groups = options.parser("x", ("g",))
    groups["g"].add_argument("--said", default=3, help="three (default: 3)")
    groups["g"].add_argument("--unsaid", default=4, help="four")
    groups["g"].add_argument("--none", default=None, help="nothing")
    text = " ".join(p.format_help().split())
    assert text.count("(default: 3)") == 1 and "four (default: 4)" in text
    assert "(default: None)" not in text


def test_configs_are_frozen(tmp_path):
    import dataclasses
    from facegender.cli import evaluate, predict, train
    for config in (train.parse_args(["--data_path", str(tmp_path / "data"),
                                     "--output", str(tmp_path / "out" / "m.h5")]),
                   predict.parse_args(["x"]), evaluate.parse_args(["--data_path", "x"])):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.batch_size = 1


def test_configs_hold_the_defaults_and_check_their_own_ranges():
    # A library user builds a config without the command line; a bad value is refused there.
    import dataclasses
    from facegender.core.common import UsageError
    from facegender.evaluation.config import EvalConfig
    from facegender.labelling.config import LabelConfig
    from facegender.training.config import TrainConfig
    config = TrainConfig(data_path=["faces"])
    assert config.epochs == 25 and config.geometry is not None
    assert TrainConfig(data_path=["faces"], face_geometry="none").geometry is None
    assert TrainConfig.of_recipe("fast", data_path=["faces"]).image_size == 160
    assert dataclasses.replace(config, epochs=0, init_model="m.h5").warmup_epochs == 0
    for make, bad in ((TrainConfig, {"data_path": ["f"], "dropout": 1.0}),
                      (TrainConfig, {"data_path": ["f"], "face_geometry": "oval"}),
                      (EvalConfig, {"data_path": ["f"], "threshold": 2.0}),
                      (LabelConfig, {"paths": ["p"], "every": 0.0}),
                      (LabelConfig, {"paths": ["p"], "ray_address": "auto"})):
        with pytest.raises(UsageError):
            make(**bad)


def test_the_facades_reach_the_package():
    import data
    import losses
    from facegender.data import decoding, listing, pipeline, splits
    from facegender.model import losses as real_losses
    assert all(hasattr(data, name) for name in data.__all__)
    assert data.load_image is decoding.load_image
    assert data.list_labeled_images is listing.list_labeled_images
    assert data.oversample_indices is splits.oversample_indices
    assert data.make_train_dataset is pipeline.make_train_dataset
    assert losses.BinaryFocalLoss is real_losses.BinaryFocalLoss


def test_a_checkpoint_saved_by_the_flat_layout_still_loads(tmp_path):
    # Before the package, the loss lived in a top-level module `losses`, and a checkpoint
    # records that module beside the loss's registered name. Such a file must still load,
    # compiled, with the loss it was trained with.
    import keras
    from facegender.model.losses import BinaryFocalLoss
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss=BinaryFocalLoss(0.3, 2.5))
    new, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(new)
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "config.json":
                text = content.decode()
                assert '"facegender.model.losses"' in text
                content = text.replace('"facegender.model.losses"', '"losses"').encode()
                assert json.loads(content)
            dst.writestr(item, content)
    loss = keras.models.load_model(old).loss
    assert isinstance(loss, BinaryFocalLoss) and (loss.alpha, loss.gamma) == (0.3, 2.5)


def test_the_shipped_model_is_found_in_a_clone_and_after_a_plain_install(tmp_path, monkeypatch):
    # A clone (or `pip install -e .`) has it at the repository root; `pip install .` copies it
    # into <the environment>/share/facegender (pyproject.toml's data-files), where the package
    # in site-packages must look instead.
    import sysconfig
    from facegender.runtime import options
    assert options.SHIPPED_MODEL == os.path.join(ROOT, "model_balanced.h5")
    shared = tmp_path / "share" / "facegender"
    shared.mkdir(parents=True)
    (shared / "only_installed.h5").write_bytes(b"")
    (shared / "model_balanced.h5").write_bytes(b"")
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    assert options.shipped_model("only_installed.h5") == str(shared / "only_installed.h5")
    assert options.shipped_model() == os.path.join(ROOT, "model_balanced.h5")  # a clone's first
    # Where neither has it, the repository's path is named (the error says it is missing).
    assert options.shipped_model("nowhere.h5") == os.path.join(ROOT, "nowhere.h5")
