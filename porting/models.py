"""The authors' published models by name: `python -m porting.models` lists them.

Each entry says what a user needs to run a released caffemodel: the project's deploy
prototxt for it, where the authors publish the weights (the URL of their
`caffemodel-url` file) and under which file name, the input it expects, and, by key,
the facts other packages own: its class names and mean (`dataset`, a class list of
`fcndata`) and its published scores (`scores_on`, a split of `eval.published`). Those
keys are resolved on use (`class_metadata`, `published_scores`), so this module imports
nothing above `porting` (ARCHITECTURE.md, "The model registry").

`python -m porting.models download NAME...` fetches weights (`porting.fetch`) into the
model cache (`models_dir()`: `$FCN_MODELS_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/fcn-faithfully/models`).
`--model NAME` stands for `--prototxt` (plus classes and mean) on `eval.segment`,
`eval.table`, `porting.convert` and `porting.onnx`; its weights are `--caffemodel FILE`,
else the cached file, which `--download` fetches first when missing. Nothing is
downloaded unless asked.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from porting import cli, fetch
from porting.checkpoint import Progress, load_caffe
from porting.errors import FcnError
from porting.metadata import NetMetadata
from porting.net import CaffeNet
from porting.registry import add_unique

log = logging.getLogger(__name__)

#: Where the project's generated net files live (the `prototxt` package's folder).
PROTOTXT_DIR = Path(__file__).resolve().parents[1] / "prototxt"
#: Caffe's input convention, which every released FCN follows.
CAFFE_INPUT = "BGR, 0..255, per-channel mean subtracted, NCHW"
#: module:function of the facts that entries name by key (imported on first use)
CLASS_LISTS = "fcndata.classes:task_metadata"
PUBLISHED_SCORES = "eval.published:published_rows"
#: the subcommand of `python -m porting.models` that fetches weights
DOWNLOAD = "download"
#: the environment variables: the weights cache (as TORCH_HOME moves torch's), and a mirror serving URL/<file name>
MODELS_DIR_VARIABLE, MODELS_MIRROR_VARIABLE = "FCN_MODELS_DIR", "FCN_MODELS_MIRROR"
#: where the cache is, for help texts (`models_dir` computes it)
MODELS_DIR_HELP = f"${MODELS_DIR_VARIABLE}, else ${{XDG_CACHE_HOME:-~/.cache}}/fcn-faithfully/models"


def models_dir() -> Path:
    """The weights cache, where downloads go and `--model NAME` looks.

    Returns:
        `$FCN_MODELS_DIR` if set, else `fcn-faithfully/models` under the user's cache folder
        (`$XDG_CACHE_HOME`, default `~/.cache`).
    """
    explicit = os.environ.get(MODELS_DIR_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fcn-faithfully" / "models"


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
    sha256: str | None = None  # the weights' hex digest, checked on download where known

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

    def cached(self, directory: str | Path | None = None) -> Path:
        """Where the weights are kept: `directory` (default: the model cache, `models_dir()`) / filename."""
        return Path(directory if directory is not None else models_dir()) / self.filename

    def download(
        self,
        directory: str | Path | None = None,
        mirror: str | None = None,
        *,
        timeout: float = fetch.TIMEOUT,
        progress: bool = True,
    ) -> Path:
        """Fetch the weights into `directory` (default: the model cache) unless they are there already.

        Args:
            directory: the folder to put them in (default: the model cache).
            mirror: fetch `<mirror>/<filename>` instead of `url` (default: `$FCN_MODELS_MIRROR`, if set).
            timeout: seconds the server may stay silent.
            progress: a progress bar on a terminal.

        Returns:
            The weights file.

        Raises:
            porting.fetch.FetchError: the download failed (the message says where a copy obtained elsewhere goes).
        """
        target = self.cached(directory)
        if target.is_file():
            log.info("%s: %s is already in %s", self.name, self.filename, target.parent)
            return target
        url = fetch.source_url(self.url, mirror or os.environ.get(MODELS_MIRROR_VARIABLE))
        log.info("%s: downloading %s from %s into %s", self.name, self.filename, url, target.parent)
        try:
            return fetch.fetch(url, target, sha256=self.sha256, timeout=timeout, progress=progress)
        except fetch.FolderError as error:
            raise fetch.FolderError(f"{error}; set {MODELS_DIR_VARIABLE} (or --dir) to a writable folder") from None

    def weights(self, caffemodel: str | Path | None = None, *, download: bool = False, progress: bool = True) -> Path:
        """The weights file: `caffemodel` (a file, or a folder holding `filename`), else the cached one.

        Args:
            caffemodel: the file given (`--caffemodel`); None looks in the model cache.
            download: fetch into the cache when the file is not there (`--download`); otherwise
                nothing is ever downloaded.
            progress: a progress bar on a terminal while downloading.

        Returns:
            An existing file.

        Raises:
            ModelError: the file is missing (`missing_weights` says how to get it).
            porting.fetch.FetchError: `download` was asked and failed.
        """
        if caffemodel is not None:
            path = Path(caffemodel)
            path = path / self.filename if path.is_dir() else path
        else:
            path = self.cached()
            if download and not path.is_file():
                return self.download(progress=progress)
        if not path.is_file():
            raise ModelError(missing_weights(self, path))
        return path


def missing_weights(model: PublishedModel, path: Path) -> str:
    """The message for weights not found at `path` (a given --caffemodel, or the cache): how to get them."""
    return (
        f"{path}: weights of {model.name} not found. `python -m porting.models {DOWNLOAD} {model.name}` (or "
        f"--download) fetches {model.filename} from {model.url} (the authors' caffemodel-url) into the model "
        f"cache {models_dir()}; or download it yourself into that folder, or anywhere and pass its path as "
        "--caffemodel"
    )


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
    name: str, caffemodel: str | Path | None = None, phase: str = "TEST", progress: Progress | None = None
) -> CaffeNet:
    """The released net `name` with its weights, its class names and mean attached.

    Metadata beside the caffemodel (a JSON sidecar) wins over the entry's class list.

    Args:
        name: a registered model (`python -m porting.models` lists them).
        caffemodel: its weights file, or a folder holding it under the authors' file name;
            None: the cached copy (`models_dir()`; `python -m porting.models download NAME` puts it there).
        phase: "TEST" or "TRAIN".
        progress: called as `progress(layer name, bytes read so far)` while the weights stream in.

    Returns:
        The net (`CaffeNet`): `net.transform` prepares an image for it, `net.metadata` holds
        the class names and mean, `net.load_report` what the weights covered.

    Raises:
        ModelError: an unknown name, or the weights file missing (the message says how to get it).
        FormatError: the weights file is damaged or does not fit the deploy net.
    """
    model = get(name)
    net = load_caffe(model.deploy_path(), model.weights(caffemodel), phase, progress)
    net.metadata = class_metadata(model).merged(net.metadata)
    return net


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
        f"  weights    {model.filename}  <- {model.url}" + (" (cached)" if model.cached().is_file() else ""),
        f"  input      {model.input}; mean ({mean})",
        f"  classes    {len(classes)} ({model.dataset}): {shown}",
        f"  published  {_scores_text(model)} on {model.scores_on}",
    ])  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m porting.models` (the listing; `download_parser` has the subcommand's)."""
    parser = cli.make_parser(
        "porting.models",
        "List the authors' published FCN models: deploy net, weights URL, input, classes, scores.",
        epilog=f"`python -m porting.models {DOWNLOAD} NAME...` fetches weights into the model cache "
        f"({MODELS_DIR_HELP}); see its --help.",
    )
    parser.usage = f"%(prog)s [--quiet] [NAME ...]\n       %(prog)s {DOWNLOAD} NAME ... [--dir DIR] [--mirror URL]"
    parser.add_argument("name", nargs="*", help="models to describe (default: all)")
    cli.add_quiet(parser)
    return parser


def download_parser() -> argparse.ArgumentParser:
    """The arguments of `python -m porting.models download`."""
    parser = cli.make_parser(
        f"porting.models {DOWNLOAD}",
        "Download published models' weights into the model cache, where `--model NAME` finds them. "
        "A cut transfer resumes from NAME.part on the next run; a file lands only whole.",
        epilog=f"The cache is {MODELS_DIR_HELP}.",
    )
    parser.add_argument("name", nargs="+", help="models to download (python -m porting.models lists them)")
    parser.add_argument("--dir", type=Path, help="put the files in DIR instead of the model cache (this call only)")
    parser.add_argument(
        "--mirror",
        metavar="URL",
        help=f"fetch URL/<file name> instead of the authors' address (default: ${MODELS_MIRROR_VARIABLE}, if set)",
    )
    parser.add_argument(
        "--timeout",
        type=cli.positive_float,
        default=fetch.TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a server silent this long (default: {fetch.TIMEOUT:g})",
    )
    cli.add_quiet(parser)
    return parser


def add_download_flag(parser: argparse.ArgumentParser) -> None:
    """`--download`, on the commands that take `--model`."""
    parser.add_argument(
        "--download",
        action="store_true",
        help=f"fetch the --model weights into the model cache first when missing "
        f"(as `python -m porting.models {DOWNLOAD}`); without it nothing is downloaded",
    )


def check_download_flag(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A usage error for `--download` (`add_download_flag`) given without `--model` (one name or a list)."""
    if args.download and not args.model:
        parser.error("--download fetches the weights of --model NAME")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if first is not None and argv[first] == DOWNLOAD:
        return _download(download_parser().parse_args(argv[:first] + argv[first + 1 :]))
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    return cli.run(
        lambda: print("\n\n".join(describe(model) for model in [get(name) for name in args.name] or MODELS.values()))
    )


def _download(args: argparse.Namespace) -> int:
    cli.setup_logging(args.quiet)

    def body() -> None:
        for model in [get(name) for name in args.name]:
            present = model.cached(args.dir).is_file()
            path = model.download(args.dir, args.mirror, timeout=args.timeout, progress=not args.quiet)
            if not present:
                cli.wrote(path, f"{path.stat().st_size:,} bytes, weights of {model.name}")

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
