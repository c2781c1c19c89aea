"""The authors' published models by name: `python -m porting.models` lists them.

Each entry says what a user needs to run a released caffemodel: the project's deploy
prototxt for it, where the authors publish the weights (the URL of their
`caffemodel-url` file) and under which file name, the input it expects, and, by key,
the facts other packages own: its class names and mean (`dataset`, a class list of
`fcndata`) and its published scores (`scores_on`, a split of `eval.published`). Those
keys are resolved on use (`class_metadata`, `published_scores`), so this module imports
nothing above `porting` (ARCHITECTURE.md, "The model registry").

`--model NAME --caffemodel FILE` stands for `--prototxt` (plus classes and mean) on
`eval.segment`, `eval.table`, `porting.convert` and `porting.onnx`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from porting import cli
from porting.checkpoint import Progress, load_caffe
from porting.errors import FcnError
from porting.metadata import NetMetadata
from porting.net import CaffeNet, LoadReport
from porting.registry import add_unique

#: Where the project's generated net files live (the `prototxt` package's folder).
PROTOTXT_DIR = Path(__file__).resolve().parents[1] / "prototxt"
#: Caffe's input convention, which every released FCN follows.
CAFFE_INPUT = "BGR, 0..255, per-channel mean subtracted, NCHW"
#: module:function of the facts that entries name by key (imported on first use)
CLASS_LISTS = "fcndata.classes:task_metadata"
PUBLISHED_SCORES = "eval.published:published_rows"


class ModelError(FcnError):
    """An unknown model name, a missing weights file, or a deploy net the project does not generate yet."""


@dataclass(frozen=True)
class PublishedModel:
    """One released caffemodel and how to run it."""

    name: str  # the authors' folder name, e.g. "voc-fcn8s"
    deploy: str  # the project's deploy prototxt, relative to PROTOTXT_DIR
    url: str  # the authors' caffemodel-url
    dataset: str  # class list key (fcndata.classes.TASKS): names and mean
    scores_on: str  # split of eval.published whose rows are this model's published scores
    input: str = CAFFE_INPUT
    description: str = ""

    @property
    def filename(self) -> str:
        """The caffemodel's file name as downloaded from `url`."""
        return self.url.rsplit("/", 1)[-1]

    def deploy_path(self) -> Path:
        """The deploy prototxt, or a ModelError when the project does not generate it (yet)."""
        path = PROTOTXT_DIR / self.deploy
        if not path.is_file():
            raise ModelError(
                f"{self.name}: its deploy net {path} is missing; regenerate the nets with `python -m prototxt.generate`"
            )
        return path

    def download_hint(self) -> str:
        """Where a user gets the weights: the file name, the command that fetches it and the authors' URL."""
        return (
            f"get {self.filename} with `python -m porting.models download {self.name}` or from {self.url} "
            "(the authors' caffemodel-url) and pass its path as --caffemodel"
        )

    def weights(self, caffemodel: str | Path) -> Path:
        """`caffemodel` checked to exist; a missing file gets the download URL and expected name."""
        path = Path(caffemodel)
        if path.is_dir():
            path = path / self.filename
        if not path.is_file():
            raise ModelError(f"{path}: weights of {self.name} not found; {self.download_hint()}")
        return path


MODELS: dict[str, PublishedModel] = {}


def register(model: PublishedModel) -> PublishedModel:
    """Add an entry (names are unique); returns it."""
    return add_unique(MODELS, model.name, model, "model")


def get(name: str) -> PublishedModel:
    """The entry called `name`, or a ModelError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(MODELS)} (python -m porting.models)") from None


def weights_needed(name: str) -> str:
    """The message for `--model NAME` given without weights: the file it needs and where to get it.

    Args:
        name: the model name as given (an unknown one gets the list of known names).

    Returns:
        One sentence for a CLI's error line.
    """
    try:
        model = get(name)
    except ModelError as error:
        return str(error)
    return f"--model {name} needs --caffemodel, its weights: {model.download_hint()}"


def _resolve(reference: str):
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)


def class_metadata(model: PublishedModel) -> NetMetadata:
    """The model's class names and mean, from the class list its `dataset` key names."""
    return _resolve(CLASS_LISTS)(model.dataset)


def published_scores(model: PublishedModel) -> list[tuple[str, dict[str, float | None]]]:
    """(source label, {metric: percent or None}) for each published row of the model."""
    return _resolve(PUBLISHED_SCORES)(model.scores_on, model.name)


_DOWNLOADS = "http://dl.caffe.berkeleyvision.org"
_VOC = dict(dataset="voc", scores_on="voc2011seg11valid")
_CONTEXT = dict(dataset="pascalcontext", scores_on="pascalcontext-val")
_NYUD = dict(scores_on="nyud-test")
_SIFTFLOW = dict(dataset="siftflow", scores_on="siftflow-test")
#: the HHA input (the encoding of depth as horizontal disparity, height above ground and angle with gravity)
_HHA_INPUT = "the HHA image as its PNG stores it (no channel swap), 0..255"
for _model in (
    PublishedModel("voc-fcn32s", "voc-fcn32s/deploy.prototxt", f"{_DOWNLOADS}/fcn32s-heavy-pascal.caffemodel",
                   description="FCN-32s VGG16, PASCAL VOC, heavy (PAMI) recipe", **_VOC),
    PublishedModel("voc-fcn16s", "voc-fcn16s/deploy.prototxt", f"{_DOWNLOADS}/fcn16s-heavy-pascal.caffemodel",
                   description="FCN-16s VGG16, PASCAL VOC, heavy recipe", **_VOC),
    PublishedModel("voc-fcn8s", "voc-fcn8s/deploy.prototxt", f"{_DOWNLOADS}/fcn8s-heavy-pascal.caffemodel",
                   description="FCN-8s VGG16, PASCAL VOC, heavy recipe", **_VOC),
    PublishedModel("voc-fcn8s-atonce", "voc-fcn8s-atonce/deploy.prototxt",
                   f"{_DOWNLOADS}/fcn8s-atonce-pascal.caffemodel",
                   description="FCN-8s VGG16 trained at once, PASCAL VOC", **_VOC),
    PublishedModel("voc-fcn-alexnet", "voc-fcn-alexnet/deploy.prototxt", f"{_DOWNLOADS}/fcn-alexnet-pascal.caffemodel",
                   description="FCN-AlexNet, PASCAL VOC", **_VOC),
    *(PublishedModel(f"pascalcontext-fcn{s}", f"pascalcontext-fcn{s}/deploy.prototxt",
                     f"{_DOWNLOADS}/pascalcontext-fcn{s}-heavy.caffemodel",
                     description=f"FCN-{s} VGG16, PASCAL-Context (59 classes and background), heavy recipe", **_CONTEXT)
      for s in ("32s", "16s", "8s")),
    PublishedModel("nyud-fcn32s-color", "nyud-fcn32s-color/deploy.prototxt",
                   f"{_DOWNLOADS}/nyud-fcn32s-color-heavy.caffemodel", dataset="nyud",
                   description="FCN-32s VGG16, NYUDv2 (40 classes), color input, heavy recipe", **_NYUD),
    PublishedModel("nyud-fcn32s-hha", "nyud-fcn32s-hha/deploy.prototxt",
                   f"{_DOWNLOADS}/nyud-fcn32s-hha-heavy.caffemodel", dataset="nyud-hha",
                   input=f"blob `data`: {_HHA_INPUT}, per-channel mean subtracted, NCHW",
                   description="FCN-32s VGG16, NYUDv2 (40 classes), HHA input, heavy recipe", **_NYUD),
    PublishedModel("nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha/deploy.prototxt",
                   f"{_DOWNLOADS}/nyud-fcn32s-color-hha-heavy.caffemodel", dataset="nyud",
                   input=f"blob `color`: {CAFFE_INPUT} (the mean below); blob `hha`: {_HHA_INPUT}, minus the "
                   "mean of nyud-fcn32s-hha",
                   description="FCN-32s VGG16, NYUDv2 (40 classes), late fusion of a color and an HHA stream "
                   "(scores averaged), heavy recipe", **_NYUD),
    *(PublishedModel(f"siftflow-fcn{s}", f"siftflow-fcn{s}/deploy.prototxt",
                     f"{_DOWNLOADS}/siftflow-fcn{s}-heavy.caffemodel",
                     description=f"FCN-{s} VGG16, SIFT Flow: two heads on one trunk, score_sem (the semantic classes "
                     "below) and score_geo (3 geometric classes), heavy recipe", **_SIFTFLOW)
      for s in ("32s", "16s", "8s")),
):  # fmt: skip
    register(_model)


def load_model(
    name: str, caffemodel: str | Path, phase: str = "TEST", progress: Progress | None = None
) -> tuple[CaffeNet, LoadReport]:
    """The released net `name` with the weights file `caffemodel`, its class names and mean attached.

    Metadata beside the caffemodel (a JSON sidecar) wins over the entry's class list.
    Returns the net and what the weights covered (`porting.load_caffe`).
    """
    model = get(name)
    net, report = load_caffe(model.deploy_path(), model.weights(caffemodel), phase, progress)
    net.metadata = class_metadata(model).merged(net.metadata)
    return net, report  # type: ignore[return-value]


def _scores_text(model: PublishedModel) -> str:
    rows = published_scores(model)
    with_iu = [(label, value) for label, row in rows if (value := row.get("mean_iu")) is not None]
    cells, labels = " / ".join(f"{v:g}" for _, v in with_iu), ", ".join(label for label, _ in with_iu)
    parts = [f"mean IU {cells} ({labels})"] if with_iu else []
    for label, row in rows:
        if row.get("mean_iu") is None:  # e.g. SIFT Flow's geometric head: pixel accuracy only
            parts.append(f"{label}: " + ", ".join(f"{metric} {v:g}" for metric, v in row.items() if v is not None))
    return "; ".join(parts) or "none"


def describe(model: PublishedModel) -> str:
    """A few lines about one entry, as the listing prints them."""
    metadata = class_metadata(model)
    classes = metadata.classes or ()
    mean = ", ".join(f"{v:g}" for v in metadata.mean) if metadata.mean else "?"
    shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    return "\n".join([
        f"{model.name}: {model.description}",
        f"  deploy     prototxt/{model.deploy}" + ("" if (PROTOTXT_DIR / model.deploy).is_file() else " (not generated yet)"),
        f"  weights    {model.filename}  <- {model.url}",
        f"  input      {model.input}; mean ({mean})",
        f"  classes    {len(classes)} ({model.dataset}): {shown}",
        f"  published  {_scores_text(model)} on {model.scores_on}",
    ])  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m porting.models`."""
    parser = cli.make_parser(
        "porting.models", "List the authors' published FCN models: deploy net, weights URL, input, classes, scores."
    )
    parser.add_argument("name", nargs="*", help="models to describe (default: all)")
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    return cli.run(
        lambda: print("\n\n".join(describe(model) for model in [get(name) for name in args.name] or MODELS.values()))
    )


if __name__ == "__main__":
    sys.exit(main())
