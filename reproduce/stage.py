"""`python -m reproduce.stage`: train one stage of the FCN recipe, as the authors' solve.py does.

    python -m reproduce.stage fcn32s --out RUNS --sbd-root SBD --voc-root VOC --base-weights VGG16.caffemodel
    python -m reproduce.stage fcn16s --out RUNS --sbd-root SBD --voc-root VOC   # from RUNS/fcn32s
    python -m reproduce.stage fcn8s  --out RUNS --sbd-root SBD --voc-root VOC   # from RUNS/fcn16s

Each stage writes `RUNS/<stage>/`: the generated train/val/deploy/solver prototxt files
(for the chosen preset, class count and width), log.csv / log.jsonl / loss.png,
snapshots, and final.caffemodel. Initial weights: FCN-32s and the at-once FCN-8s from
the VGG16 classifier (fc6/fc7 cast to convolutions by `porting.surgery.transplant`);
FCN-16s from RUNS/fcn32s/final.caffemodel and FCN-8s from RUNS/fcn16s, unless
--base-weights names another file, built at the width and class count the file's
final.json says (`reproduce.startweights`). Its blobs are copied as Caffe's copy_from
does: a shared layer of another shape stops the stage. Layers the source lacks keep
Caffe's initial values (zero score layers). Every upsampling whose layer name contains "up" starts bilinear,
also one the previous stage learned (FCN-8s' `upscore2` under the cvpr presets), as the
authors' solve.py files re-interpolate every such layer after `copy_from`. Training set:
SBD train; validation: VOC2011 seg11valid, scored every --eval-every updates and after the
last, and logged as mean IU. Several GPUs: `torchrun --nproc_per_node=N -m reproduce.stage ...`; the
solver.prototxt then holds Caffe's per-GPU `iter_size` (images per update / N).

The written solver has no `random_seed`: the seed (default 1337, the authors') is the data
layer's `param_str` seed, which orders the images; Caffe's own RNG, which `random_seed`
would seed, draws nothing torch's dropout masks could match.

FCN-32s from another ILSVRC classifier (CVPR 2015 Table 1), cast by `prototxt.backbone`:

    python -m reproduce.stage fcn32s --backbone googlenet --base-prototxt bvlc_googlenet/deploy.prototxt \
        --base-weights bvlc_googlenet.caffemodel --out RUNS ...     # writes RUNS/fcn32s-googlenet/

with the CVPR recipe by default (`--preset cvpr`: fixed lr 1e-3 AlexNet/CaffeNet, 5e-5 GoogLeNet).

The authors' other nets train under their directory names (`reproduce.families`), with the
heavy preset (their solver files):

    python -m reproduce.stage voc-fcn-alexnet --sbd-root SBD --voc-root VOC --base-weights CAFFENET.caffemodel
    python -m reproduce.stage pascalcontext-fcn32s --voc-root VOC --pascalcontext-root CONTEXT --base-weights VGG16
    python -m reproduce.stage nyud-fcn32s-color-hha --nyud-root NYUD   # from RUNS/nyud-fcn32s-{color,hha}
    python -m reproduce.stage siftflow-fcn16s --siftflow-root SIFTFLOW   # from RUNS/siftflow-fcn32s

Each trains on its family's training split and validates on its scoring split (PASCAL-Context
val, NYUDv2 test, SIFT Flow test; SIFT Flow logs the semantic head's metrics, and the
geometric head's with a `geo_` prefix).

Other data: `--dataset folder:ROOT` or `ade20k:ROOT` (fcndata.registry) trains on that
dataset's train split and validates on its validation split, with as many classes as it
names. `--from-net CAFFEMODEL` starts from any trained FCN, another class list allowed
(reproduce.finetune). Beside final.caffemodel the stage writes final.json, the class
names and mean (porting.metadata), which `eval.segment --runs` and `eval.table` read.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch.utils.data import Dataset

import porting
from eval.infer import Head, family_heads, score
from eval.metrics import METRICS
from fcndata import NUM_CLASSES
from fcndata.classes import net_task, task_metadata
from fcndata.downloads import (
    NYUD_ROOT_HELP,
    PASCALCONTEXT_ROOT_HELP,
    SBD_ROOT_HELP,
    SIFTFLOW_ROOT_HELP,
    VOC_ROOT_HELP,
)
from fcndata.families import ROOT_KEYS, check_roots
from fcndata.registry import DATASETS
from porting import cli
from porting.errors import FcnError
from porting.fully_convolutional import cast_classifier
from porting.metadata import NetMetadata, read_sidecar, write_sidecar
from porting.numerics import TF32_HELP, set_fp32_precision
from porting.proto import caffe_pb2
from porting.prototxt import read_prototxt, to_text
from porting.surgery import set_bilinear_upsampling
from prototxt import backbone as backbones
from prototxt import fcn, nets, solvers
from prototxt.stages import STAGES as VOC_STAGES
from reproduce import families
from reproduce.distributed import DistContext, init_distributed, shutdown
from reproduce.finetune import adapt_classes, source_class_names
from reproduce.solver import CaffeSGD, SolverConfig
from reproduce.stagedata import StageData, check_voc_roots, dataset_data, voc_data
from reproduce.startweights import cast_from_classifier, check_classes, copy_trained, inherit
from reproduce.train import ORDERS, TrainConfig, Trainer, TrainResult

#: what the CLI trains: the VOC recipe's stages (`prototxt.stages`), then the authors' other nets
TRAINABLE = (*VOC_STAGES, *families.STAGES)
Definition: TypeAlias = caffe_pb2.NetParameter | caffe_pb2.SolverParameter
logger = logging.getLogger("reproduce.stage")  # not __name__: that is "__main__" under python -m


@dataclass(frozen=True)
class StageOptions:
    """Everything one stage run needs; the CLI's arguments, parsed."""

    stage: str
    out: Path
    voc_root: Path | None = None
    sbd_root: Path | None = None
    pascalcontext_root: Path | None = None
    nyud_root: Path | None = None
    siftflow_root: Path | None = None
    base_weights: Path | None = None
    preset: str | None = None  # None: heavy for VGG16, cvpr (Table 1's recipe) for the other backbones
    max_iter: int | None = None
    images_per_update: int | None = None
    display: int | None = None
    snapshot: int | None = None
    classes: int | None = None  # None: the dataset's class count (21 for VOC)
    width: float | None = None  # None: the width the starting weights were trained at (their final.json), else 1
    ids: Path | None = None
    eval_every: int | None = None
    eval_images: int | None = None
    resume: bool = False
    device: str = "auto"
    seed: int = 1337
    backbone: str = backbones.GENERATED_BACKBONE
    base_prototxt: Path | None = None
    dataset: str | None = None  # KIND:ROOT (fcndata.registry) in place of --voc-root/--sbd-root
    from_net: Path | None = None  # a trained FCN to start from, any class list
    from_classes: Path | None = None  # the class names of from_net when its sidecar has none
    mean: tuple[float, ...] | None = None  # input mean B,G,R; None: the dataset's
    order: str | None = None  # training image order (reproduce.train.ORDERS); None: the preset's
    tf32: bool = False

    @property
    def recipe(self) -> str:
        """The preset that runs: the one given, else heavy for VGG16 and cvpr for the other backbones."""
        if self.preset is not None:
            return self.preset
        return "heavy" if self.backbone == backbones.GENERATED_BACKBONE else "cvpr"

    @property
    def net_width(self) -> float:
        """The width multiplier the stage builds its nets with (`width`, 1 when unknown)."""
        return 1.0 if self.width is None else self.width

    @property
    def run_name(self) -> str:
        """The stage's folder under --out: the stage, with the backbone appended unless it is VGG16."""
        return backbones.run_name(self.stage, self.backbone)


def net_name(stage: str, backbone: str = backbones.GENERATED_BACKBONE) -> str:
    """The net a stage trains: the authors' directory name (`prototxt.nets.NETS`), or a cast backbone's."""
    if stage in families.STAGES:
        return stage
    return VOC_STAGES[stage].net if backbone == backbones.GENERATED_BACKBONE else backbones.net_name(backbone)


def roots(options: StageOptions) -> dict[str, Path | None]:
    """The dataset folders given on the command line, by option name."""
    return {key: getattr(options, key) for key in ROOT_KEYS}


def classifier_help(backbone: str) -> str:
    """Where to get the classifier a backbone's fcn32s starts from."""
    return backbones.BACKBONES[backbone].files


def starts_from_classifier(options: StageOptions) -> bool:
    """Whether the stage casts an ILSVRC classifier (fcn32s, fcn8s-atonce, FCN-AlexNet), not a trained FCN."""
    stage = VOC_STAGES.get(options.stage)
    return options.from_net is None and (stage is None or stage.previous is None)


def initial_weights(options: StageOptions) -> Path:
    """The caffemodel a stage starts from, or a clear error saying where to get it."""
    previous = VOC_STAGES[options.stage].previous
    if options.from_net is not None:
        if options.base_weights is not None:
            raise FcnError("--from-net and --base-weights both name the initial weights; give one")
        if not options.from_net.is_file():
            raise FcnError(f"{options.from_net}: --from-net file not found (a trained FCN caffemodel)")
        return options.from_net
    if options.base_weights is not None:
        path = options.base_weights
        if not path.is_file():
            hint = classifier_help(options.backbone) if previous is None else f"the trained {previous} weights"
            raise FcnError(f"{path}: --base-weights file not found; {options.stage} starts from {hint}")
        return path
    if previous is None:
        raise FcnError(
            f"{options.stage} starts from a classifier: pass --base-weights FILE, {classifier_help(options.backbone)}"
        )
    path = options.out / previous / "final.caffemodel"
    if not path.is_file():
        raise FcnError(
            f"{path}: not found; {options.stage} starts from the trained {previous}: run "
            f"`python -m reproduce.stage {previous} --out {options.out} ...` first, or pass --base-weights"
        )
    return path


def definitions(options: StageOptions, data: StageData | None = None, ranks: int = 1) -> dict[str, Definition]:
    """The stage's train/val/deploy nets and solver for the chosen preset, data, classes and width.

    The VOC nets (and the other backbones' FCN-32s) need the stage's `data`; the authors'
    other nets write their own split files (e.g. trainval/test) under the keys `train` and
    `val`, and `deploy`. The solver's `iter_size` is per GPU, as Caffe reads it: images per
    update / `ranks`.
    """
    if options.stage in families.STAGES:
        return family_definitions(options, ranks)
    if data is None:
        raise ValueError(f"{options.stage} needs the stage's data (stage_data) for its data layers")
    name = net_name(options.stage, options.backbone)
    recipe = solvers.PRESETS[options.recipe]
    data_params = {**data.params, "deploy": None}
    messages: dict[str, Definition]
    if options.backbone == backbones.GENERATED_BACKBONE:
        messages = {
            split: fcn.build(
                name,
                split,
                num_classes=len(data.classes),
                width=options.net_width,
                normalize_loss=recipe.normalize_loss,
                learn_skip_upsampling=recipe.learn_skip_upsampling,
                data_params=params,
                data_layer=data.data_layer if params is not None else None,
            )
            for split, params in data_params.items()
        }
    else:
        messages = dict(cast_backbone(options, len(data.classes), recipe.normalize_loss, data_params))
    messages["solver"] = stage_solver(options, solvers.build(options.recipe, name), ranks)
    return messages


def stage_solver(options: StageOptions, solver: caffe_pb2.SolverParameter, ranks: int) -> caffe_pb2.SolverParameter:
    """The preset's solver with the command line's --max-iter and --images-per-update, and
    `iter_size` per GPU (images per update / `ranks`)."""
    if options.max_iter is not None:
        solver.max_iter = options.max_iter
    if options.display is not None:
        solver.display = options.display
    if options.snapshot is not None:
        solver.snapshot = options.snapshot
    images = options.images_per_update or solver.iter_size
    if images % ranks:
        raise FcnError(f"{images} images per update cannot be split over {ranks} processes; pick a divisor")
    solver.iter_size = images // ranks
    return solver


def cast_backbone(
    options: StageOptions, num_classes: int, normalize_loss: bool, data_params: dict
) -> dict[str, caffe_pb2.NetParameter]:
    """FCN-32s nets cast from the --base-prototxt classifier (narrowed by --width)."""
    if options.base_prototxt is None:
        raise FcnError(
            f"--backbone {options.backbone} needs the classifier's definition: pass --base-prototxt deploy.prototxt "
            f"from {classifier_help(options.backbone)}"
        )
    if not options.base_prototxt.is_file():
        raise FcnError(f"{options.base_prototxt}: --base-prototxt file not found")
    classifier = backbones.narrow(read_prototxt(options.base_prototxt), options.net_width)
    source = str(options.base_prototxt)
    trunk = cast_classifier(classifier, drop=backbones.BACKBONES[options.backbone].drop, source=source)
    nets, _ = backbones.fcn32s_nets(
        trunk, num_classes=num_classes, normalize_loss=normalize_loss, data_params=data_params, source=source
    )
    return nets


def family_definitions(options: StageOptions, ranks: int = 1) -> dict[str, Definition]:
    name = net_name(options.stage)
    recipe = solvers.recipe(options.recipe, name)
    train_split, test_split = nets.info(name).splits
    settings: dict = {"width": options.net_width, "normalize_loss": recipe.normalize_loss}
    if name == "voc-fcn-alexnet":
        settings["num_classes"] = options.classes or NUM_CLASSES
    else:
        settings["learn_skip_upsampling"] = recipe.learn_skip_upsampling
    messages: dict[str, Definition] = {
        kind: nets.build(
            name,
            split,
            data_params=None if split == "deploy" else families.data_params(name, split, roots(options), options.seed),
            **settings,
        )
        for kind, split in (("train", train_split), ("val", test_split), ("deploy", "deploy"))
    }
    solver = solvers.build(options.recipe, name, train_net="train.prototxt", test_net="val.prototxt")
    messages["solver"] = stage_solver(options, solver, ranks)
    return messages


def stage_data(options: StageOptions, evaluating: bool) -> StageData:
    """The stage's data: `--dataset`, or VOC + SBD from their roots."""
    common: dict[str, Any] = dict(
        classes=options.classes,
        mean=options.mean,
        seed=options.seed,
        evaluating=evaluating,
        eval_images=options.eval_images,
    )
    if options.dataset is None:
        return voc_data(options.voc_root, options.sbd_root, ids=options.ids, **common)
    if options.voc_root is not None or options.sbd_root is not None or options.ids is not None:
        raise FcnError("--dataset names the data; --voc-root, --sbd-root and --ids are for the VOC/SBD default")
    return dataset_data(options.dataset, **common)


def initial_blobs(options: StageOptions, weights: Path, net: porting.CaffeNet, classes: tuple[str, ...], log) -> dict:
    """The initial weights' blobs; from `--from-net`, fitted to this stage's classes (reproduce.finetune)."""
    blobs = porting.read_caffemodel(weights)
    if options.from_net is None:
        return blobs
    source = source_class_names(weights, blobs, options.from_classes, "score_fr")
    blobs, transfer = adapt_classes(blobs, net, source, classes)
    for line in transfer.lines():
        log(f"  {line}")
    return blobs


def make_evaluator(
    dataset,
    deploy: caffe_pb2.NetParameter,
    device: torch.device,
    num_classes: int,
    heads: tuple[Head, ...] | None = None,
):
    """Score the training net's current weights on `dataset` through a deploy net: the first
    head's metrics as they are, the other heads' prefixed (`geo_mean_iu`)."""
    deploy_net = porting.CaffeNet(deploy, phase="TEST").to(device)
    heads = heads or (Head(num_classes=num_classes),)

    def evaluate(net: torch.nn.Module) -> dict[str, float]:
        deploy_net.load_state_dict(net.state_dict())
        result = score(deploy_net, dataset, progress=False, heads=heads)
        if len(heads) == 1:
            return {key: result[key] for key in METRICS}
        metrics = {key: result[heads[0].blob][key] for key in METRICS}
        for head in heads[1:]:
            prefix = head.blob.removeprefix("score_")
            metrics.update({f"{prefix}_{key}": result[head.blob][key] for key in METRICS})
        return metrics

    return evaluate


def run_stage(
    options: StageOptions, ctx: DistContext | None = None, log: Callable[[str], None] = logger.info
) -> TrainResult:
    """Train one stage end to end and log where its files are (rank 0).

    Args:
        options: the stage, data, preset and overrides.
        ctx: the process group; joined from torchrun's environment when None.
        log: where progress messages go (rank 0); the module's logger by default.

    Returns:
        The Trainer's result: updates done, smoothed loss and the paths of the log, plot,
        last snapshot and final.caffemodel.

    Raises:
        FcnError: missing data or weights, a preset without this stage, weights that do not fit.
    """
    set_fp32_precision(options.tf32)
    ctx = ctx or init_distributed()
    device = torch.device(options.device) if options.device != "auto" and ctx.world_size == 1 else ctx.device
    recipe = solvers.PRESETS[options.recipe]
    if options.backbone != backbones.GENERATED_BACKBONE and options.stage != "fcn32s":
        raise FcnError(
            f"--backbone {options.backbone} trains fcn32s only (CVPR 2015 Table 1); the skip stages are VGG16's"
        )
    name = net_name(options.stage, options.backbone)
    if name not in recipe.base_lr:
        raise FcnError(
            f"the {options.recipe} preset has no {options.run_name}; it trains {', '.join(n.removeprefix('voc-') for n in recipe.base_lr)}"
        )
    recipe = recipe.for_net(name)
    snapshot_every = (recipe.snapshot or 0) if options.snapshot is None else options.snapshot
    eval_every = snapshot_every if options.eval_every is None else options.eval_every
    directory = options.out / options.run_name
    directory.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before any work
    family = nets.info(name).family.name if name in nets.NETS else "voc"
    if family != "voc":
        if options.dataset is not None or options.from_net is not None:
            raise FcnError(
                f"--dataset and --from-net train the VOC nets (fcn32s, fcn16s, fcn8s, fcn8s-atonce); "
                f"{name} reads its own dataset"
            )
        check_roots(family, roots(options), reader=name)
    elif options.dataset is None:
        check_voc_roots(options.voc_root, options.sbd_root, evaluating=eval_every > 0)
    if options.stage in families.STAGES:
        weights = families.initial_weights(name, options.out, options.base_weights)
    else:
        weights = [initial_weights(options)]
    options = inherit(options, weights)
    data = None
    dataset: Dataset
    validation: Dataset | None
    if family == "voc":
        data = stage_data(options, evaluating=eval_every > 0)
        if options.from_net is None:
            check_classes(weights[0], (read_sidecar(weights[0]) or NetMetadata()).classes, data.classes)
        dataset, validation, num_classes = data.train, data.validation, len(data.classes)
    else:
        train_split, test_split = nets.info(name).splits
        dataset = families.dataset(name, train_split, roots(options))
        test = families.dataset(name, test_split, roots(options)) if eval_every > 0 else None
        if test is not None and options.eval_images is not None:
            test = families.dataset(name, test_split, roots(options), ids=test.ids[: options.eval_images])
        validation = test
        num_classes = options.classes or NUM_CLASSES
    files = definitions(options, data, ctx.world_size)
    if ctx.is_main:
        for kind, message in files.items():
            notes = solvers.notes(options.recipe, ctx.world_size) if kind == "solver" else ""
            (directory / f"{kind}.prototxt").write_text(notes + to_text(message))

    torch.manual_seed(options.seed)
    net = porting.CaffeNet(
        files["train"], phase="TRAIN", input_shapes=families.input_shapes(files["train"], files["deploy"])
    )
    if ctx.is_main:
        log(
            f"{options.run_name}: preset {options.recipe}, initial weights from "
            f"{', '.join(str(path) for path in weights)}"
        )
    if data is None:
        report = families.initialize(net, name, weights, options.net_width)
    else:
        blobs = initial_blobs(options, weights[0], net, data.classes, log if ctx.is_main else _quiet)
        if starts_from_classifier(options):
            report = cast_from_classifier(net, blobs, weights[0], options.net_width)
        else:
            report = copy_trained(net, blobs, weights[0], options.net_width, len(data.classes))
        if not (report.copied or report.coerced):
            raise FcnError(f"{weights[0]}: none of its layers is in the {options.stage} net; is it the right file?")
    upsamplings = [layer.name for layer in net.net_param.layer if layer.type == "Deconvolution" and "up" in layer.name]
    bilinear = set_bilinear_upsampling(net, upsamplings)
    if ctx.is_main:
        for line in report.lines():
            log(f"  {line}")
        if bilinear:
            log(f"  bilinear: {', '.join(bilinear)}")
    net.to(device)

    per_gpu = SolverConfig.from_proto(files["solver"], source=str(directory / "solver.prototxt"))
    config = dataclasses.replace(
        per_gpu, iter_size=per_gpu.iter_size * ctx.world_size, accumulation=recipe.accumulation
    )
    solver = CaffeSGD(net.param_specs(), config, solver_count=ctx.world_size)
    heads = family_heads(family, num_classes)
    evaluate = None if validation is None else make_evaluator(validation, files["deploy"], device, num_classes, heads)
    train_config = TrainConfig.from_solver(
        config, directory, seed=options.seed, eval_every=eval_every, order=options.order or recipe.order
    )
    trainer = Trainer(net, solver, dataset, train_config, evaluate=evaluate)
    result = trainer.run(resume=directory if options.resume else None)
    if ctx.is_main:
        metadata = NetMetadata(data.classes, data.mean) if data is not None else task_metadata(net_task(name))
        write_sidecar(result.caffemodel, dataclasses.replace(metadata, width=options.net_width))
        for line in summary(options.run_name, options.recipe, result):
            log(line)
    return result


def summary(stage: str, preset: str, result: TrainResult) -> list[str]:
    """Lines saying what a finished stage ran and where its files are.

    Args:
        stage: the stage's run name, e.g. "fcn32s".
        preset: the training recipe it ran (`prototxt.solvers.PRESETS`).
        result: what its Trainer returned.

    Returns:
        The header line (updates, final smoothed loss) and one line each for log, plot and weights.
    """
    loss = "n/a" if result.loss is None else f"{result.loss:.6g}"
    return [
        f"{stage}: preset {preset}, {result.iter} updates, loss {loss}",
        f"  log:     {result.log_jsonl} (and {result.log_csv.name})",
        f"  plot:    {result.plot}",
        f"  weights: {result.caffemodel}",
    ]


def _quiet(*_: object) -> None:
    pass


#: the counting flags: flag -> (its type, its help)
COUNT_FLAGS: dict[str, tuple[Callable[[str], int], str]] = {
    "--max-iter": (cli.non_negative_int, "updates to train (default: the preset's)"),
    "--images-per-update": (
        cli.positive_int,
        "images per update, accumulated (Caffe iter_size; default: the preset's)",
    ),
    "--display": (cli.non_negative_int, "log the smoothed loss every N updates (0: never; default: the preset's, 20)"),
    "--snapshot": (cli.non_negative_int, "snapshot every N updates (0: only at the end; default: the preset's)"),
    "--classes": (cli.positive_int, "number of classes incl. background (default: the dataset's; 21 for VOC)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "reproduce.stage",
        "Train one FCN stage (32s -> 16s -> 8s, or 8s at once) on SBD train, validating on seg11valid, "
        "or on any dataset named by --dataset; or one of the authors' other nets (FCN-AlexNet, "
        "PASCAL-Context, NYUDv2, SIFT Flow) on its data.",
    )
    parser.add_argument(
        "stage",
        choices=TRAINABLE,
        metavar="STAGE",
        help=f"what to train: {', '.join(TRAINABLE)}. fcn16s starts from the trained fcn32s, fcn8s "
        "from fcn16s, fcn32s and fcn8s-atonce from the ILSVRC classifier",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs"), help="runs folder; the stage writes OUT/<stage>/ (default: runs)"
    )
    parser.add_argument("--voc-root", type=Path, help=VOC_ROOT_HELP)
    parser.add_argument("--sbd-root", type=Path, help=SBD_ROOT_HELP)
    parser.add_argument("--pascalcontext-root", type=Path, help=PASCALCONTEXT_ROOT_HELP)
    parser.add_argument("--nyud-root", type=Path, help=NYUD_ROOT_HELP)
    parser.add_argument("--siftflow-root", type=Path, help=SIFTFLOW_ROOT_HELP)
    parser.add_argument(
        "--dataset",
        help=f"KIND:ROOT in place of VOC/SBD ({', '.join(DATASETS)}): trains on its "
        "train split, validates on its validation split",
    )
    parser.add_argument(
        "--base-weights",
        type=Path,
        help="initial caffemodel: VGG16 for fcn32s and fcn8s-atonce (required there); "
        "default for fcn16s/fcn8s: OUT/<previous stage>/final.caffemodel",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(solvers.PRESETS),
        help="training recipe: heavy (authors' solver files; the default for VGG16), cvpr (CVPR 2015 "
        "as its Caffe summed 20 gradients; the default for the other backbones), cvpr-mean (the same "
        "updates in today's averaging Caffe), demo (synthetic data)",
    )
    parser.add_argument(
        "--backbone",
        choices=list(backbones.BACKBONES),
        default=backbones.GENERATED_BACKBONE,
        help="the ILSVRC classifier fcn32s is cast from (CVPR 2015 Table 1; default vgg16); "
        "others write OUT/fcn32s-<backbone>/",
    )
    parser.add_argument(
        "--base-prototxt",
        type=Path,
        help="the classifier's deploy prototxt, for --backbone alexnet, caffenet or googlenet "
        "(the Caffe Model Zoo's bvlc_* deploy.prototxt)",
    )
    for flag, (kind, text) in COUNT_FLAGS.items():
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--from-net",
        type=Path,
        help="start from this trained FCN caffemodel (any class list: matching classes keep their "
        "score filters, new ones start at zero) instead of --base-weights / the previous stage",
    )
    parser.add_argument(
        "--from-classes",
        type=Path,
        help="class names of --from-net, one per line (default: its sidecar .json, else by its width)",
    )
    parser.add_argument("--mean", type=cli.bgr_mean, help="input mean B,G,R (default: the dataset's, the VGG16 mean)")
    parser.add_argument(
        "--width",
        type=cli.positive_float,
        help="backbone channel multiplier, e.g. 0.125 or 1/8 (default: the width the starting net was "
        "trained at, said by its final.json; 1 = VGG16)",
    )
    parser.add_argument("--ids", type=Path, help="validation id list replacing the derived seg11valid")
    parser.add_argument(
        "--eval-every",
        type=cli.non_negative_int,
        help="validate every N updates and after the last (0: never; default: the snapshot interval)",
    )
    parser.add_argument("--eval-images", type=cli.positive_int, help="validate on the first N images only")
    parser.add_argument("--resume", action="store_true", help="continue from the latest snapshot in OUT/<stage>/")
    cli.add_device(parser)
    parser.add_argument("--seed", type=int, default=1337, help="data order and dropout seed (default: 1337)")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        help="image order: authors (seeded draws with replacement, their data layer's) or "
        "permutation (one per epoch); default: the preset's",
    )
    parser.add_argument("--tf32", action="store_true", help=TF32_HELP)
    cli.add_quiet(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[StageOptions, bool]:
    """The CLI's arguments as `StageOptions`, and whether --quiet was given. Under torchrun, `--device auto`
    lets each rank take its own GPU."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    quiet = args.pop("quiet")
    if args["device"] != "auto":
        args["device"] = str(cli.resolve_device(parser, args["device"]))
    return StageOptions(**args), quiet


def main(argv: list[str] | None = None) -> int:
    options, quiet = parse_args(argv)
    cli.setup_logging(quiet)
    try:
        return cli.run(lambda: run_stage(options))
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
