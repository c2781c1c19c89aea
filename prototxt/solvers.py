"""Solver files for the two published FCN training recipes, and the built-in demo's.

`heavy` is the reference repository's recipe (the PAMI paper's): the authors'
`solver.prototxt` files exactly, for all 15 nets of `prototxt.nets`. Batch 1 with no
accumulation, momentum 0.99, an unnormalized (summed) loss, so tiny fixed learning rates:
1e-10 (32s and the at-once 8s, both from VGG16), 1e-12 (16s), 1e-14 (8s); 100k iterations
per VOC stage, 300k at once and for PASCAL-Context, NYUDv2 and SIFT Flow (whose 8s keeps
1e-12; NYUD's late-fusion color-hha 1e-12; NYUD snapshots every 2,000, SIFT Flow none).
FCN-AlexNet is the exception: a normalized loss, lr 1e-4, momentum 0.9, 20 images per update.
Images come in the authors' order (`order="authors"`: their data layer's seeded draws
with replacement, see `reproduce.train`).

`cvpr` is the CVPR 2015 recipe (Sec. 4, "Optimization"), our reading of it:

- SGD, momentum 0.9, weight decay 5e-4, fixed learning rate;
- "minibatch size of 20 images": batch 1 with `iter_size: 20`, Caffe's accumulation
  of 20 single-image passes per update (whole images differ in size, so they cannot be
  stacked);
- learning rate 1e-4 for FCN-32s (FCN-VGG16), and for the skip stages "decreased by a
  factor of 100" per stage: 1e-6 for FCN-16s and, "in this fashion", 1e-8 for FCN-8s.
  These rates go with a per-pixel normalized loss (`normalize: true`): the paper does
  not say, but the authors' code pairs lr 1e-4 with a normalized loss (FCN-AlexNet), so
  the nets of this preset are built with `normalize_loss=True`;
- intermediate upsamplings learned (`learn_skip_upsampling=True`), final one fixed;
- `max_iter` 5,000 updates per stage: our choice (the paper gives days, not
  iterations), the same 100k images per stage as the heavy recipe;
- the 20 gradients are summed, not averaged (`accumulation="sum"`): `iter_size` entered
  Caffe for FCN in 41cf06c (Aug 2014) as a plain sum of the passes' diffs, and only in
  May 2015 (55585f5: local rate / iter_size and decay x iter_size; 0e7a078: `Normalize`,
  the diff / iter_size) did Caffe start to average them, after the CVPR paper. Its loss
  was already per pixel (cf42598, Aug 2014: SoftmaxWithLoss / (num x spatial_dim)).

`cvpr-mean` is the same training under today's Caffe, which averages: with the update
`history = momentum * history + lr * (diff + decay * w)`, a summed diff S = 20 x mean
gives lr (S + decay w) = (20 lr)(S / 20 + (decay / 20) w), so `base_lr` x 20 (2e-3,
2e-5, 2e-7) and `weight_decay` / 20 (2.5e-5) make the same updates; its solver files run
as they are in any Caffe since May 2015. `--preset cvpr` computes as the paper's Caffe
did; both give the same weights up to rounding.

The CVPR paper has no at-once net, so the `cvpr` presets do not define one. They do
train FCN-32s from other classifiers (Sec. 4.1, Table 1): the same recipe with fixed
learning rates 1e-3 for FCN-AlexNet (here also CaffeNet, the authors' AlexNet base) and
5e-5 for FCN-GoogLeNet (`prototxt.backbone` casts those nets; they are VOC nets). Their
data order is the authors' too (the same data layer).

`demo` is no published recipe: it is the built-in demo's (`python -m reproduce.demo`),
for synthetic data and a net 1/8 as wide as VGG16 trained for minutes on a CPU. It keeps
the CVPR recipe's shape (normalized per-pixel loss, momentum 0.9, learned skip
upsamplings, fixed final upsampling) with a far higher learning rate that does not drop
per stage (the skip score layers start from zero and must learn within a short stage)
and few images per update, in per-epoch permutations of the few synthetic images. It
defines no at-once net either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from porting.proto import caffe_pb2

from . import nets
from .backbone import CAST_NETS


@dataclass(frozen=True)
class Preset:
    """A training recipe: solver settings per net and how its nets are built."""

    description: str
    base_lr: dict[str, float]
    max_iter: dict[str, int]
    momentum: float
    weight_decay: float
    iter_size: int
    snapshot: int | None
    normalize_loss: bool
    learn_skip_upsampling: bool
    #: per net, settings that differ from the preset's (a `snapshot` of None: no snapshot fields)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: how the iter_size passes combine: "mean" (Caffe since May 2015) or "sum" (the CVPR paper's Caffe)
    accumulation: str = "mean"
    #: training image order (`reproduce.train.ORDERS`)
    order: str = "authors"

    def for_net(self, net: str) -> Preset:
        """The recipe with `net`'s own settings in place of the preset's."""
        return replace(self, **self.overrides.get(net, {}), overrides={})


PRESETS: dict[str, Preset] = {
    "heavy": Preset(
        description="reference repo (PAMI): batch 1, momentum 0.99, unnormalized loss, fixed lr",
        base_lr={
            "voc-fcn32s": 1e-10,
            "voc-fcn16s": 1e-12,
            "voc-fcn8s": 1e-14,
            "voc-fcn8s-atonce": 1e-10,
            "voc-fcn-alexnet": 1e-4,
            "pascalcontext-fcn32s": 1e-10,
            "pascalcontext-fcn16s": 1e-12,
            "pascalcontext-fcn8s": 1e-14,
            "nyud-fcn32s-color": 1e-10,
            "nyud-fcn32s-hha": 1e-10,
            "nyud-fcn32s-color-d": 1e-10,
            "nyud-fcn32s-color-hha": 1e-12,
            "siftflow-fcn32s": 1e-10,
            "siftflow-fcn16s": 1e-12,
            "siftflow-fcn8s": 1e-12,
        },
        max_iter={
            **dict.fromkeys(("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn-alexnet"), 100000),
            **{net: 300000 for net, entry in nets.NETS.items() if entry.family.name != "voc"},
            "voc-fcn8s-atonce": 300000,
        },
        momentum=0.99,
        weight_decay=0.0005,
        iter_size=1,
        snapshot=4000,
        normalize_loss=False,
        learn_skip_upsampling=False,
        overrides={
            "voc-fcn-alexnet": dict(momentum=0.9, iter_size=20, normalize_loss=True),
            **{net: dict(snapshot=2000) for net, entry in nets.NETS.items() if entry.family.name == "nyud"},
            **{net: dict(snapshot=None) for net, entry in nets.NETS.items() if entry.family.name == "siftflow"},
        },
    ),
    "cvpr": Preset(
        description="CVPR 2015 as its Caffe computed: 20 images summed per update, momentum 0.9, normalized loss, "
        "fixed lr 1e-4 / 1e-6 / 1e-8",
        base_lr={
            "voc-fcn32s": 1e-4,
            "voc-fcn16s": 1e-6,
            "voc-fcn8s": 1e-8,
            "voc-fcn32s-alexnet": 1e-3,
            "voc-fcn32s-caffenet": 1e-3,
            "voc-fcn32s-googlenet": 5e-5,
        },
        max_iter={"voc-fcn32s": 5000, "voc-fcn16s": 5000, "voc-fcn8s": 5000, **dict.fromkeys(CAST_NETS, 5000)},
        momentum=0.9,
        weight_decay=0.0005,
        iter_size=20,
        snapshot=200,
        normalize_loss=True,
        learn_skip_upsampling=True,
        accumulation="sum",
    ),
    "demo": Preset(
        description="built-in demo (synthetic data, narrow net, CPU minutes): CVPR's shape, lr 5e-3 every stage",
        base_lr={"voc-fcn32s": 5e-3, "voc-fcn16s": 5e-3, "voc-fcn8s": 5e-3, **dict.fromkeys(CAST_NETS, 5e-3)},
        max_iter={"voc-fcn32s": 120, "voc-fcn16s": 80, "voc-fcn8s": 80, **dict.fromkeys(CAST_NETS, 120)},
        momentum=0.9,
        weight_decay=0.0005,
        iter_size=5,
        snapshot=20,
        normalize_loss=True,
        learn_skip_upsampling=True,
        order="permutation",
    ),
}


def averaging_equivalent(sums: Preset, description: str) -> Preset:
    """The "mean"-accumulation recipe making the same updates as the "sum" one (module docstring)."""
    k = sums.iter_size
    return replace(
        sums,
        description=description,
        base_lr={net: lr * k for net, lr in sums.base_lr.items()},
        weight_decay=sums.weight_decay / k,
        accumulation="mean",
    )


PRESETS["cvpr-mean"] = averaging_equivalent(
    PRESETS["cvpr"], "CVPR 2015 in today's Caffe: 20 images averaged per update, lr 2e-3 / 2e-5 / 2e-7, decay 2.5e-5"
)


def notes(preset: str, ranks: int = 1) -> str:
    """Comment lines for the head of a `preset` solver file meant for `ranks` GPUs: how
    many images each update takes, and how this file's accumulation relates to Caffe's.

    Args:
        preset: a `PRESETS` name.
        ranks: GPUs (processes) the file is written for; its `iter_size` is per GPU.

    Returns:
        Lines starting with "# ", each ending in a newline ("" when there is nothing to say).
    """
    lines = []
    if ranks > 1:
        lines.append(
            f"# iter_size is per GPU: `caffe train -gpu` with {ranks} GPUs averages {ranks} solvers' gradients, "
            f"so each update takes {ranks} x iter_size images, as this run did"
        )
    if PRESETS[preset].accumulation == "sum":
        lines.append(
            "# accumulation: the CVPR paper's Caffe (41cf06c, Aug 2014) summed the iter_size gradients; "
            "Caffe since May 2015 (55585f5, 0e7a078) averages them, and makes these updates from the "
            "cvpr-mean preset's file (base_lr x iter_size, weight_decay / iter_size)"
        )
    return "".join(line + "\n" for line in lines)


def recipe(preset: str, net: str) -> Preset:
    """The settings of `net` under a recipe (`PRESETS`), or a ValueError naming what exists."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if net not in PRESETS[preset].base_lr:
        known = ", ".join(PRESETS[preset].base_lr)
        raise ValueError(f"the {preset} recipe has no {net!r}; it defines {known}")
    return PRESETS[preset].for_net(net)


def build(
    preset: str, net: str, *, train_net: str | None = None, test_net: str | None = None
) -> caffe_pb2.SolverParameter:
    """The solver of `net` under a recipe (`PRESETS`), laid out like the authors' solver files.

    The test net is made but never run by the solver (scoring is `eval`'s job), hence the
    huge `test_interval` and no test at start, as in the authors' files. The nets default
    to the net's split files (`train.prototxt`/`val.prototxt` or `trainval`/`test`).
    """
    settings = recipe(preset, net)
    family = nets.FAMILIES["voc"] if net in CAST_NETS else nets.info(net).family
    solver = caffe_pb2.SolverParameter(
        train_net=train_net or f"{family.splits[0]}.prototxt",
        test_net=[test_net or f"{family.splits[1]}.prototxt"],
        test_iter=[family.test_images],
        test_interval=999999999,
        display=20,
        average_loss=20,
        lr_policy="fixed",
        base_lr=settings.base_lr[net],
        momentum=settings.momentum,
        iter_size=settings.iter_size,
        max_iter=settings.max_iter[net],
        weight_decay=settings.weight_decay,
        test_initialization=False,
    )
    if settings.snapshot is not None:
        solver.snapshot = settings.snapshot
        solver.snapshot_prefix = "snapshot/train"
    return solver
