"""Training recipes by name: the two published ones and the built-in demo's.

`heavy` and `cvpr` are `prototxt.solvers`' recipes, unchanged. `demo` is for the
synthetic data and a net 1/32 as wide as VGG16 trained for minutes on a CPU: the CVPR
recipe's shape (normalized per-pixel loss, momentum 0.9, learned skip upsamplings,
fixed final upsampling) with a much higher learning rate that does not drop per stage
(the skip score layers start from zero and must learn within the stage), and 5 images
per update, so that each stage's 70-80 updates take a few CPU minutes.
"""

from __future__ import annotations

from prototxt import solvers
from prototxt.solvers import Preset
from porting.proto import caffe_pb2

DEMO = Preset(
    description="built-in demo (synthetic data, narrow net, CPU minutes): CVPR recipe with lr 3e-2 every stage",
    base_lr={"voc-fcn32s": 3e-2, "voc-fcn16s": 3e-2, "voc-fcn8s": 3e-2},
    max_iter={"voc-fcn32s": 80, "voc-fcn16s": 70, "voc-fcn8s": 70},
    momentum=0.9,
    weight_decay=0.0005,
    iter_size=5,
    snapshot=20,
    normalize_loss=True,
    learn_skip_upsampling=True,
)

PRESETS: dict[str, Preset] = {**solvers.PRESETS, "demo": DEMO}


def solver_parameter(preset: str, net: str) -> caffe_pb2.SolverParameter:
    """The solver file of `net` under `preset`, laid out like the authors' files.

    The demo recipe reuses the published layout (`prototxt.solvers.build`) and puts its
    own numbers in; only the numbers differ between recipes.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if preset in solvers.PRESETS:
        return solvers.build(preset, net)
    recipe = PRESETS[preset]
    if net not in recipe.base_lr:
        raise ValueError(f"the {preset} recipe has no {net!r}; it defines {', '.join(recipe.base_lr)}")
    param = solvers.build("cvpr", net)
    param.base_lr = recipe.base_lr[net]
    param.max_iter = recipe.max_iter[net]
    param.momentum = recipe.momentum
    param.weight_decay = recipe.weight_decay
    param.iter_size = recipe.iter_size
    param.snapshot = recipe.snapshot
    return param
