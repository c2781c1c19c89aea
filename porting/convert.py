"""`python -m porting.convert`: Caffe prototxt + caffemodel -> one self-contained `.pt` checkpoint.

The checkpoint holds the (phase-filtered) net definition, its weights and its metadata
(class names, mean: `porting.metadata`), so `porting.load("model.pt")` needs no Caffe file
afterwards. Metadata comes from `--classes-file`/`--mean`, else the caffemodel's sidecar or
the `--model` entry, else the defaults for the net's class count (`metadata.defaults_for`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from porting import models
from porting.checkpoint import load_caffe, save_checkpoint
from porting.errors import FcnError
from porting.metadata import NetMetadata, complete_metadata, parse_mean, read_class_names
from porting.net import LoadReport

BAR_WIDTH = 30


class ProgressBar:
    """A one-line bar on stderr: weights read so far against the caffemodel's size.

    The size is taken when the first layer arrives, so a missing file is reported by the reader.
    """

    def __init__(self, caffemodel: Path, stream=None) -> None:
        self.caffemodel = caffemodel
        self.total = 1
        self.stream = stream if stream is not None else sys.stderr
        self.started = False

    def __call__(self, layer: str, done: int) -> None:
        if not self.started:
            self.total = max(os.path.getsize(self.caffemodel), 1)
        self.started = True
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {done / 2**20:7.1f} / {self.total / 2**20:.1f} MB  {layer[:32]:<32}")
        self.stream.flush()

    def finish(self) -> None:
        if self.started:
            self.stream.write("\n")
            self.stream.flush()
            self.started = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m porting.convert",
        description="Convert a Caffe net (prototxt + caffemodel) into one self-contained PyTorch checkpoint "
        "that porting.load() reads back without the Caffe files.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prototxt", type=Path, help="net definition (.prototxt; V0/V1/V2 accepted)")
    source.add_argument("--model", help="a published model by name (python -m porting.models) in place of --prototxt")
    parser.add_argument("--caffemodel", required=True, type=Path, help="trained weights (.caffemodel, V1 or V2 layout)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt); written atomically")
    parser.add_argument(
        "--phase", default="TEST", choices=("TRAIN", "TEST"), help="phase whose layers the checkpoint keeps (default: TEST)"
    )
    parser.add_argument("--classes-file", type=Path, help="class names, one per line in index order (stored in the checkpoint)")
    parser.add_argument("--mean", type=_mean, help="input mean B,G,R stored in the checkpoint (default: the net's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _mean(text: str) -> tuple[float, ...]:
    try:
        return parse_mean(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bar = None if args.quiet else ProgressBar(args.caffemodel)
    report: LoadReport | None
    try:
        if args.model is not None:
            net, report = models.load_model(args.model, args.caffemodel, args.phase, bar)
        else:
            net, report = load_caffe(args.prototxt, args.caffemodel, args.phase, bar)
        if bar is not None:
            bar.finish()
        classes = read_class_names(args.classes_file) if args.classes_file else None
        complete_metadata(net, NetMetadata(classes, args.mean))
        save_checkpoint(net, args.out)
    except (FcnError, OSError) as exc:
        if bar is not None:
            bar.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert report is not None  # load_caffe reports whenever a caffemodel is given
    if report.missing:
        print(f"warning: no weights for {', '.join(report.missing)} (given their fillers)", file=sys.stderr)
    if report.ignored:
        print(f"note: ignored weights of layers the net lacks: {', '.join(report.ignored)}", file=sys.stderr)
    count = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {len(report.loaded)} layers with weights, {count:,} parameters", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
