"""Training the authors' other nets: FCN-AlexNet, PASCAL-Context, NYUDv2 and SIFT Flow.

What `reproduce.stage` needs for them beyond the VOC FCN-VGG16 stages, as the authors'
solve.py files do it:

- data: FCN-AlexNet trains on SBD train and validates on seg11valid like the VOC nets;
  PASCAL-Context on VOC2010 train / val with the Context labels; NYUDv2 on trainval /
  test with the tops the net's data layer asks for (color, depth, hha, label); SIFT Flow
  on trainval / test with its `data`, `sem` and `geo` tops;
- initial weights: an ILSVRC classifier (VGG16; CaffeNet for FCN-AlexNet) cast into
  convolutions for the 32s nets; each 16s and 8s from the previous stage; NYUD's
  early-fusion color-d from VGG16 with its 4-channel `conv1_1_bgrd` made of VGG16's
  conv1_1 (the BGR filters as they are, depth as their mean over BGR); the late-fusion
  color-hha from the trained color and HHA nets, each copied into its stream (layer names
  suffixed `color` / `hha`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

import porting
from fcndata.families import FamilyDataset, open_split
from porting.errors import FcnError
from porting.proto import caffe_pb2
from porting.surgery import TransplantReport, transplant
from prototxt import fcn, nets
from prototxt.backbone import BACKBONES, GENERATED_BACKBONE
from reproduce.startweights import check_fits

STAGES = tuple(net for net in nets.NETS if net not in fcn.NETS)

#: the trained nets a net starts from, by the authors' solve.py; absent: an ILSVRC classifier
PREVIOUS: dict[str, tuple[str, ...]] = {
    "pascalcontext-fcn16s": ("pascalcontext-fcn32s",),
    "pascalcontext-fcn8s": ("pascalcontext-fcn16s",),
    "siftflow-fcn16s": ("siftflow-fcn32s",),
    "siftflow-fcn8s": ("siftflow-fcn16s",),
    "nyud-fcn32s-color-hha": ("nyud-fcn32s-color", "nyud-fcn32s-hha"),
}
#: the late-fusion streams: source net -> suffix of its layers in the fused net
STREAM_SUFFIX = {"nyud-fcn32s-color": "color", "nyud-fcn32s-hha": "hha"}
EARLY_FUSION_CONV = ("conv1_1", "conv1_1_bgrd")  # VGG16's first convolution -> color-d's


def classifier_help(net: str) -> str:
    """Which ILSVRC classifier a net starts from, and where to get it."""
    return BACKBONES["caffenet" if net == "voc-fcn-alexnet" else GENERATED_BACKBONE].files


def family(net: str) -> str:
    return nets.info(net).family.name


def data_params(net: str, split: str, roots: Mapping[str, Path | None], seed: int) -> dict:
    """The `param_str` of a net's data layer for one of its splits, pointing at the user's folders."""
    kind = family(net)
    if kind == "pascalcontext":
        return {
            "context_dir": str(roots["pascalcontext_root"]),
            "seed": seed,
            "split": split,
            "voc_dir": str(roots["voc_root"]),
        }
    if kind == "nyud":
        return {"tops": nets.nyud_tops(net), "seed": seed, "nyud_dir": str(roots["nyud_root"]), "split": split}
    if kind == "siftflow":
        return {"siftflow_dir": str(roots["siftflow_root"]), "seed": seed, "split": split}
    params = dict(fcn.DATA_PARAMS[split])
    key = "sbdd_dir" if split == "train" else "voc_dir"
    params[key] = str(roots["sbd_root"]) if split == "train" else str(Path(roots["voc_root"] or "") / "VOC2011")
    return {**params, "seed": seed}


def dataset(net: str, split: str, roots: Mapping[str, Path | None], ids: list[str] | None = None) -> FamilyDataset:
    """A non-VOC family's dataset for one of the net's splits (PASCAL-Context, NYUDv2, SIFT Flow)."""
    kind = family(net)
    tops = nets.nyud_tops(net) if kind == "nyud" else None
    return open_split(kind, split, roots, reader=net, tops=tops, ids=ids)


def initial_weights(net: str, out: Path, base_weights: Path | None) -> list[Path]:
    """The caffemodel(s) a net starts from: --base-weights, else the previous stages' final weights."""
    previous = PREVIOUS.get(net, ())
    if base_weights is not None:
        if len(previous) > 1:
            raise FcnError(
                f"{net} fuses {' and '.join(previous)}: it starts from their trained weights under --out, "
                "not from --base-weights"
            )
        if not base_weights.is_file():
            hint = classifier_help(net) if not previous else f"the trained {previous[0]} weights"
            raise FcnError(f"{base_weights}: --base-weights file not found; {net} starts from {hint}")
        return [base_weights]
    if not previous:
        raise FcnError(f"{net} starts from a classifier: pass --base-weights FILE, {classifier_help(net)}")
    paths = [out / name / "final.caffemodel" for name in previous]
    for name, path in zip(previous, paths):
        if not path.is_file():
            raise FcnError(
                f"{path}: not found; {net} starts from the trained {name}: run "
                f"`python -m reproduce.stage {name} --out {out} ...` first"
                + ("" if len(previous) > 1 else ", or pass --base-weights")
            )
    return paths


def initialize(model: porting.CaffeNet, net: str, weights: list[Path], width: float = 1.0) -> TransplantReport:
    """Copy the starting weights into a net the way the authors' solve.py does; returns what was copied.

    Every blob of a layer the net shares with a file must fit (`reproduce.startweights.check_fits`);
    `width` is the net's, named in that error.
    """
    previous = PREVIOUS.get(net, ())
    if len(previous) > 1:
        report = TransplantReport()
        for name, path in zip(previous, weights):
            blobs = {f"{layer}{STREAM_SUFFIX[name]}": value for layer, value in porting.read_caffemodel(path).items()}
            check_fits(model, blobs, path, width)
            part = transplant(model, blobs)
            report.copied += part.copied
            report.coerced += part.coerced
            report.skipped += part.skipped
        report.untouched = [
            name
            for name, blobs in model.blobs_numpy().items()
            if blobs and not any(item.startswith(f"{name}.") for item in report.copied + report.coerced)
        ]
        return report
    blobs = porting.read_caffemodel(weights[0])
    source, target = EARLY_FUSION_CONV
    check_fits(model, blobs, weights[0], width)
    report = transplant(model, blobs)
    if target in model.layers and source in blobs:
        weight, bias = (np.asarray(blob, dtype=np.float32) for blob in blobs[source][:2])
        current = model.blobs_numpy()[target]
        fused = np.concatenate([weight, weight.mean(axis=1, keepdims=True)], axis=1)
        if fused.shape != current[0].shape:
            raise FcnError(f"{weights[0]}: {source} {weight.shape} cannot seed {target} {current[0].shape}")
        model.load_blobs({target: [fused, bias.reshape(current[1].shape)]}, source="early fusion", strict=False)
        report.coerced.append(f"{target}.0 from {source}.0: BGR filters, depth = their mean")
        report.copied.append(f"{target}.1 from {source}.1")
        report.untouched = [name for name in report.untouched if name != target]
    if not (report.copied or report.coerced):
        raise FcnError(f"{weights[0]}: none of its layers is in the {net} net; is it the right file?")
    return report


def input_shapes(train: caffe_pb2.NetParameter, deploy: caffe_pb2.NetParameter) -> dict[str, tuple[int, ...]]:
    """Example shapes of a training net's data tops: its inputs as the deploy net's Input gives
    them (channels per input), its labels 1 x 1 x H x W."""
    given = {
        top: tuple(int(d) for d in shape.dim)
        for layer in deploy.layer
        if layer.type == "Input"
        for top, shape in zip(layer.top, layer.input_param.shape)
    }
    size = next(iter(given.values()))[2:] if given else (500, 500)
    return {top: given.get(top, (1, 1, *size)) for top in train.layer[0].top} if train.layer else {}
