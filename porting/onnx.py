"""ONNX export of a `CaffeNet`: one file that serves every batch size and image size.

`python -m porting.onnx --prototxt P --caffemodel W --out M.onnx` (or `--checkpoint M.pt`).

The net goes through torch's maintained exporter (`torch.onnx.export(..., dynamo=True)`,
which needs the `onnxscript` package): `torch.export` traces it with the batch, height
and width of every 4-D input as the named dynamic dimensions `batch`, `height` and
`width`, so sizes that follow from the input (Crop windows, the upsampled score map) are
exported as `Shape` arithmetic rather than constants; the first axis of every other input
(labels) is the batch too. A net whose layers fix the image
size (an InnerProduct over a feature map, as in the ILSVRC classifiers) cannot have
dynamic height and width; it is exported with the traced height and width and a dynamic
batch. Layers whose plain PyTorch form has no exact ONNX translation are exported as
ONNX's own operator (`EXPORT_KERNELS`): Caffe's across-channel LRN is ONNX's `LRN`,
whose `size`, `alpha`, `beta` and `bias` are Caffe's `local_size`, `alpha`, `beta`
and `k`. The weights are stored inside the one file, which is checked with
`onnx.checker` (with shape inference) before returning.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from porting import cli, models
from porting.layers.base import CaffeLayer
from porting.layers.normalization import LRN
from porting.net import CaffeNet, Kernel
from porting.optional import require

MIN_OPSET = 18  # the lowest opset torch's exporter writes
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
#: the batch size traced (0 and 1 would be specialized by torch.export)
TRACED_BATCH = 2
#: layer types whose weights fix their bottom's height and width (an InnerProduct over a map)
FIXES_IMAGE_SIZE = frozenset({"InnerProduct"})

#: the loggers of torch's exporter and of the onnxscript optimizer it runs: their notes ("Removed 18
#: unused nodes", "torchvision is not installed. Skipping torchvision::nms") say nothing about the net
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")

log = logging.getLogger(__name__)


def _lrn_operator(layer: LRN) -> Kernel | None:
    """Caffe's across-channel LRN as ONNX's `LRN` node; the within-channel form is left to its plain
    layer, whose zero-padded average pool (count_include_pad) ONNX's AveragePool computes exactly."""
    if not layer.across_channels:
        return None
    attributes = {"size": layer.size, "alpha": layer.alpha, "beta": layer.beta, "bias": layer.k}

    def kernel(x: Tensor) -> list[Tensor]:
        return [torch.onnx.ops.symbolic("LRN", (x,), attributes, dtype=x.dtype, shape=x.shape, version=1)]

    return kernel


#: layer type -> the kernel that replaces its layer during export (None: keep the plain layer)
EXPORT_KERNELS: dict[type[CaffeLayer], Callable[..., Kernel | None]] = {LRN: _lrn_operator}


class _Positional(nn.Module):
    """Adapts the net's `dict` interface to the positional tensors the ONNX exporter expects."""

    def __init__(self, net: CaffeNet, argmax: bool) -> None:
        super().__init__()
        self.net = net
        self.argmax = argmax
        self.kernels: dict[str, Kernel] = {}
        for name, layer in net.layers.items():
            export_kernel = EXPORT_KERNELS.get(type(layer))
            kernel = export_kernel(layer) if export_kernel is not None else None
            if kernel is not None:
                self.kernels[name] = kernel

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        blobs = self.net.forward_with(self.kernels, **dict(zip(self.net.inputs, inputs)))
        outputs = tuple(blobs[name] for name in self.net.outputs)
        if self.argmax:
            outputs += (outputs[0].argmax(dim=1),)
        return outputs


def _example_inputs(net: CaffeNet) -> tuple[Tensor, ...]:
    """Tensors in the shapes the net was built for (its Input layers or data-layer defaults),
    with batch `TRACED_BATCH`."""
    generator = torch.Generator().manual_seed(0)
    shapes = [net.input_shapes[name] for name in net.inputs]
    return tuple(torch.randn((TRACED_BATCH, *shape[1:]) if shape else shape, generator=generator) for shape in shapes)


def _dynamic_shapes(examples: tuple[Tensor, ...], axes: dict[int, str]) -> dict[str, tuple]:
    """The named dynamic `axes` of every 4-D input and the batch of every other one. torch's
    exporter traces each name as `torch.export.Dim.DYNAMIC` and writes the names into the graph."""
    batch = {axis: name for axis, name in axes.items() if axis == 0}
    return {"inputs": tuple(dict(axes) if x.dim() == 4 else dict(batch) if x.dim() else None for x in examples)}


def output_names(net: CaffeNet, *, argmax: bool = False) -> list[str]:
    """The ONNX graph outputs: the net's output blobs, then `<first output>_argmax` if asked."""
    names = list(net.outputs)
    return names + [f"{names[0]}_argmax"] if argmax else names


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Inside the block the exporter reports errors only: its loggers (`EXPORTER_LOGGERS`) are raised to
    ERROR and its deprecation warnings (FutureWarning, DeprecationWarning) are not shown."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def export_onnx(
    net: CaffeNet, path: str | Path, *, opset: int = MIN_OPSET, argmax: bool = False, verbose: bool = False
) -> None:
    """Write `net` (a `CaffeNet`) as one ONNX file with dynamic batch, height and width.

    Args:
        net: the net to export (its current weights; exported in eval mode).
        path: the .onnx file to write (its folder is created).
        opset: the ONNX opset, at least `MIN_OPSET`.
        argmax: add the per-pixel label map (argmax over channels of the first output,
            int64 N x H x W) as a second output, so a runtime needs no post-processing.
        verbose: let the exporter print its notes and warnings (`quiet_exporter` hides them).

    Raises:
        ValueError: for an opset below `MIN_OPSET`.
        MissingExtraError: `onnx` or `onnxscript` (torch's exporter needs it) is not installed: the `[onnx]` extra.
        torch.onnx.errors.OnnxExporterError: where torch's exporter cannot express the net.
        OSError: the file cannot be written.

    Size-dependent choices inside the layers (which pooling kernel reproduces Caffe's
    window count) are traced at the net's built input size.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the supported minimum {MIN_OPSET}")
    onnx = require("onnx", extra="onnx", needed_by="ONNX export")
    require("onnxscript", extra="onnx", needed_by="ONNX export (torch's exporter)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = _example_inputs(net)
    was_training = net.training
    net.eval()
    fixing = [name for name, layer in net.layers.items() if layer.layer_type in FIXES_IMAGE_SIZE]
    axes = DYNAMIC_AXES
    if fixing:
        axes = {0: DYNAMIC_AXES[0]}
        log.info("%s: %s fix the image size; height and width are exported as built", path, ", ".join(fixing))
    try:
        with nullcontext() if verbose else quiet_exporter():
            _export(net, path, examples, axes, opset, argmax)
    finally:
        net.train(was_training)
    onnx.checker.check_model(str(path), full_check=True)


def _export(
    net: CaffeNet, path: Path, examples: tuple[Tensor, ...], axes: dict[int, str], opset: int, argmax: bool
) -> None:
    torch.onnx.export(
        _Positional(net, argmax).eval(),
        examples,
        str(path),
        dynamo=True,
        input_names=list(net.inputs),
        output_names=output_names(net, argmax=argmax),
        dynamic_shapes=_dynamic_shapes(examples, axes),
        opset_version=opset,
        external_data=False,
        verbose=False,
    )


def _load_net(args: argparse.Namespace) -> CaffeNet:
    import porting

    if args.checkpoint is not None:
        return porting.load(args.checkpoint)
    if args.model is not None:
        weights = models.get(args.model).weights(args.caffemodel, download=args.download, progress=not args.quiet)
        return models.load_model(args.model, weights)
    return porting.load(args.prototxt, args.caffemodel, phase="TEST")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "porting.onnx",
        "Export a Caffe net (prototxt + caffemodel, or a converted checkpoint) to ONNX "
        "with dynamic batch, height and width.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prototxt", type=Path, help="net definition (deploy) prototxt")
    source.add_argument(
        "--checkpoint", type=Path, help="converted checkpoint (.pt or .safetensors) from `python -m porting.convert`"
    )
    source.add_argument(
        "--model",
        help="a published model by name (python -m porting.models); weights from --caffemodel, else the model cache",
    )
    parser.add_argument("--caffemodel", type=Path, help="weights for --prototxt or --model (its default: the cache)")
    models.add_download_flag(parser)
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument(
        "--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET}, default {MIN_OPSET})"
    )
    parser.add_argument("--argmax", action="store_true", help="add the argmax label map as a second output")
    parser.add_argument("--verbose", action="store_true", help="show the exporter's own notes and warnings")
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.caffemodel is not None and args.prototxt is None and args.model is None:
        parser.error("--caffemodel goes with --prototxt or --model")
    models.check_download_flag(args, parser)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}")
    cli.setup_logging(args.quiet)
    return cli.run(lambda: export(args))


def export(args: argparse.Namespace) -> None:
    net = _load_net(args)
    export_onnx(net, args.out, opset=args.opset, argmax=args.argmax, verbose=args.verbose)
    names = ", ".join(output_names(net, argmax=args.argmax))
    cli.wrote(args.out, f"opset {args.opset}; inputs {', '.join(net.inputs)}; outputs {names}")


if __name__ == "__main__":
    sys.exit(main())
