"""ONNX export of a `CaffeNet`: one file that serves every batch size and image size.

`python -m porting.onnx --prototxt P --caffemodel W --out M.onnx` (or `--checkpoint M.pt`).

The net is traced with TorchScript's ONNX exporter with the batch, height and width of
every 4-D input marked dynamic, so sizes that follow from the input (Crop windows, the
upsampled score map) are exported as `Shape` arithmetic rather than constants. The
written file is checked with `onnx.checker` (with shape inference) before returning.
The layers' input checks compare sizes in Python, which the tracer warns about; those
warnings are silenced because the checks do not shape the computed graph (the tests run
every exported net at sizes it was not traced at).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from porting.errors import FcnError
from porting.net import CaffeNet

MIN_OPSET = 17
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


class _Positional(nn.Module):
    """Adapts the net's `dict` interface to the positional tensors the ONNX tracer expects."""

    def __init__(self, net: CaffeNet, argmax: bool) -> None:
        super().__init__()
        self.net = net
        self.argmax = argmax

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        blobs = self.net(**dict(zip(self.net.inputs, inputs)))
        outputs = tuple(blobs[name] for name in self.net.outputs)
        if self.argmax:
            outputs += (outputs[0].argmax(dim=1),)
        return outputs


def _example_inputs(net: CaffeNet) -> tuple[Tensor, ...]:
    """Tensors in the shapes the net was built for (its Input layers or data-layer defaults)."""
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(net.input_shapes[name], generator=generator) for name in net.inputs)


def output_names(net: CaffeNet, *, argmax: bool = False) -> list[str]:
    """The ONNX graph outputs: the net's output blobs, then `<first output>_argmax` if asked."""
    names = list(net.outputs)
    return names + [f"{names[0]}_argmax"] if argmax else names


def export_onnx(net: CaffeNet, path: str | Path, *, opset: int = MIN_OPSET, argmax: bool = False) -> None:
    """Write `net` (a `CaffeNet`) as an ONNX model with dynamic batch, height and width.

    With `argmax`, the per-pixel label map (argmax over channels of the first output,
    int64 N x H x W) is a second output, so a runtime needs no post-processing.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the supported minimum {MIN_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = _example_inputs(net)
    outputs = output_names(net, argmax=argmax)
    dynamic = {name: DYNAMIC_AXES for name, x in zip(net.inputs, examples) if x.dim() == 4}
    was_training = net.training
    net.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                _Positional(net, argmax),
                examples,
                str(path),
                dynamo=False,
                input_names=list(net.inputs),
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
            )
    finally:
        net.train(was_training)
    onnx.checker.check_model(str(path), full_check=True)


def _load_net(args: argparse.Namespace) -> CaffeNet:
    import porting

    if args.checkpoint is not None:
        return porting.load(args.checkpoint)
    return porting.load(args.prototxt, args.caffemodel, phase="TEST")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m porting.onnx",
        description="Export a Caffe net (prototxt + caffemodel, or a converted checkpoint) to ONNX "
        "with dynamic batch, height and width.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prototxt", type=Path, help="net definition (deploy) prototxt")
    source.add_argument("--checkpoint", type=Path, help="converted checkpoint from `python -m porting.convert`")
    parser.add_argument("--caffemodel", type=Path, help="weights for --prototxt")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET}, default {MIN_OPSET})")
    parser.add_argument("--argmax", action="store_true", help="add the argmax label map as a second output")
    args = parser.parse_args(argv)
    if args.caffemodel is not None and args.prototxt is None:
        parser.error("--caffemodel goes with --prototxt")
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}")
    try:
        net = _load_net(args)
        export_onnx(net, args.out, opset=args.opset, argmax=args.argmax)
    except (FcnError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = ", ".join(output_names(net, argmax=args.argmax))
    print(f"wrote {args.out} (opset {args.opset}; inputs {', '.join(net.inputs)}; outputs {names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
