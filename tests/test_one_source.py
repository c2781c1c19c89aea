"""Each fact the project relies on is defined in one place and imported everywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from eval.metrics import METRICS, Metrics
from eval.published import PUBLISHED, published_name
from fcndata import CLASS_NAMES, NUM_CLASSES
from prototxt import fcn, solvers
from prototxt.stages import STAGES, pipeline, stage_of_net

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("porting", "prototxt", "fcndata", "eval", "reproduce", "bench")
GENERATED = {ROOT / "porting" / "proto" / "caffe_pb2.py"}
#: module-level names that hold one project-wide fact each (NUM_CLASSES and MEAN_BGR are also
#: the names of other datasets' own facts in their modules; their VOC values are checked below)
FACT_NAMES = (
    "CLASS_NAMES",
    "IGNORE_LABEL",
    "SEG11VALID_COUNT",
    "PREVIOUS",
    "METRICS",
    "METRIC_LABELS",
    "NET_NAMES",
    "VOC_DOWNLOAD",
    "SBD_DOWNLOAD",
    "RECIPE_DATA",
    "VOC_STAGES",
    "FAMILY_DATA",
    "PASCALCONTEXT_ROOT_HELP",
    "NYUD_ROOT_HELP",
    "SIFTFLOW_ROOT_HELP",
    "ROOTS",
    "SCORE_BLOB",
)


def modules() -> dict[Path, ast.Module]:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py")) if path not in GENERATED]
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in files}


def module_level_assignments(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names += [target.id for target in targets if isinstance(target, ast.Name)]
    return names


def constants(tree: ast.Module) -> list[object]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]


@pytest.fixture(scope="module")
def trees() -> dict[Path, ast.Module]:
    return modules()


@pytest.mark.parametrize("name", FACT_NAMES)
def test_each_fact_name_is_assigned_at_most_once(trees, name):
    where = [path.relative_to(ROOT) for path, tree in trees.items() if name in module_level_assignments(tree)]
    assert len(where) <= 1, f"{name} defined in {where}"


@pytest.mark.parametrize("value", [104.00699, 116.66877, 122.67892, 736, "aeroplane", "tvmonitor"])
def test_each_fact_value_is_written_once(trees, value):
    where = [
        path.relative_to(ROOT)
        for path, tree in trees.items()
        for found in constants(tree)
        if type(found) is type(value) and found == value
    ]
    assert len(where) == 1, f"{value!r} written in {where}"


def test_the_voc_class_count_is_not_written_again(trees):
    """21 is `len(CLASS_NAMES)`: no module names the number itself, nor defaults a class count to it."""
    where = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                where += [path.relative_to(ROOT)] if node.value.value == NUM_CLASSES else []
            if isinstance(node, ast.arguments):
                defaults = list(zip(node.args[len(node.args) - len(node.defaults) :], node.defaults))
                defaults += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
                where += [
                    path.relative_to(ROOT)
                    for arg, default in defaults
                    if "classes" in arg.arg and isinstance(default, ast.Constant) and default.value == NUM_CLASSES
                ]
    assert not where, f"the VOC class count written out in {where}"


def test_the_stages_are_listed_only_by_the_registry(trees):
    """No module spells out the stage list (fcn32s, fcn16s, fcn8s, ...): it comes from prototxt.stages.STAGES."""
    registry = ROOT / "prototxt" / "stages.py"
    lists = [
        path.relative_to(ROOT)
        for path, tree in trees.items()
        if path != registry
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List))
        and [getattr(e, "value", None) for e in node.elts][:3] == list(STAGES)[:3]
    ]
    assert not lists, lists


def test_metric_names_are_written_once(trees):
    tuples = [
        path.relative_to(ROOT)
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Tuple) and {"pixel_acc", "mean_iu"} <= set(constants(node))
    ]
    assert len(tuples) == 1, tuples
    assert set(METRICS) <= set(Metrics.__dataclass_fields__)


def test_class_names_follow_the_authors_list(reference):
    """classes.txt: one name per line, the line's index is the label value; a blank line ends the list."""
    lines = (reference / "data" / "pascal" / "classes.txt").read_text().splitlines()
    names = tuple(lines[: lines.index("")] if "" in lines else lines)
    assert tuple(name.strip() for name in names) == CLASS_NAMES
    assert NUM_CLASSES == len(CLASS_NAMES) == 21


def test_stage_registry_ties_nets_recipes_and_published_rows():
    for stage in STAGES.values():
        assert stage.net in fcn.NETS and stage.net in solvers.PRESETS["heavy"].base_lr
        assert stage.previous is None or stage.previous in STAGES
        assert stage_of_net(stage.net) == stage.name and published_name(stage.net) == stage.name
        assert stage.name in PUBLISHED["voc2011seg11valid"], f"no published row for {stage.name}"
    assert pipeline("fcn8s") == ("fcn32s", "fcn16s", "fcn8s")
    assert set(fcn.NETS) == {stage.net for stage in STAGES.values()}
