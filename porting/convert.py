"""`python -m porting.convert`: Caffe prototxt + caffemodel -> one self-contained checkpoint.

`--format pt` (torch.save) or `--format safetensors` (no pickle, memory-mapped loading; one
tensor per blob under its `state_dict()` key; the default for an `--out` ending in
`.safetensors`): `porting.checkpoint` describes both. The checkpoint holds the (phase-filtered) net definition, its weights and its metadata
(class names, mean: `porting.metadata`), so `porting.load("model.pt")` needs no Caffe file
afterwards. Metadata comes from `--classes-file`/`--mean`, else the caffemodel's sidecar or
the `--model` entry, else the defaults for the net's class count (`metadata.defaults_for`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from porting import cli, models
from porting.checkpoint import KINDS, load_caffe, save_checkpoint
from porting.metadata import NetMetadata, complete_metadata, read_class_names
from porting.progress import progress_bar

log = logging.getLogger(__name__)


class ReadProgress:
    """A bar of the weights read so far against the caffemodel's size (the loader's progress callback).

    The size is taken when the first layer arrives, so a missing file is reported by the reader.
    """

    def __init__(self, caffemodel: Path, enabled: bool = True) -> None:
        self.caffemodel = caffemodel
        self.enabled = enabled
        self.bar: tqdm | None = None

    def __call__(self, layer: str, done: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(
                total=max(os.path.getsize(self.caffemodel), 1),
                desc="reading",
                unit="B",
                unit_scale=True,
                enabled=self.enabled,
            )
        bar = self.bar
        bar.set_postfix_str(layer[:32], refresh=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "porting.convert",
        "Convert a Caffe net (prototxt + caffemodel) into one self-contained PyTorch checkpoint "
        "that porting.load() reads back without the Caffe files.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prototxt", type=Path, help="net definition (.prototxt; V0/V1/V2 accepted)")
    source.add_argument(
        "--model",
        help="a published model by name (python -m porting.models) in place of --prototxt; weights from "
        "--caffemodel, else the model cache",
    )
    parser.add_argument(
        "--caffemodel", type=Path, help="trained weights (.caffemodel, V1 or V2 layout); a --model's default: the cache"
    )
    models.add_download_flag(parser)
    parser.add_argument(
        "--out", required=True, type=Path, help="checkpoint to write (.pt or .safetensors); written atomically"
    )
    parser.add_argument(
        "--format",
        choices=tuple(KINDS),
        help="pt (torch.save) or safetensors (no pickle, memory-mapped loading); default: the --out suffix's, else pt",
    )
    parser.add_argument(
        "--phase",
        default="TEST",
        choices=("TRAIN", "TEST"),
        help="phase whose layers the checkpoint keeps (default: TEST)",
    )
    parser.add_argument(
        "--classes-file", type=Path, help="class names, one per line in index order (stored in the checkpoint)"
    )
    parser.add_argument("--mean", type=cli.mean, help="input mean B,G,R stored in the checkpoint (default: the net's)")
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prototxt is not None and args.caffemodel is None:
        parser.error(f"--prototxt {args.prototxt} needs --caffemodel W, the weights of that net")
    models.check_download_flag(args, parser)
    cli.setup_logging(args.quiet)
    return cli.run(lambda: convert(args))


def convert(args: argparse.Namespace) -> None:
    caffemodel = args.caffemodel
    if args.model is not None:
        caffemodel = models.get(args.model).weights(caffemodel, download=args.download, progress=not args.quiet)
    bar = ReadProgress(caffemodel, enabled=not args.quiet)
    try:
        if args.model is not None:
            net = models.load_model(args.model, caffemodel, args.phase, bar)
        else:
            net = load_caffe(args.prototxt, caffemodel, args.phase, bar)
    finally:
        bar.close()
    classes = read_class_names(args.classes_file) if args.classes_file else None
    complete_metadata(net, NetMetadata(classes, args.mean))
    save_checkpoint(net, args.out, args.format)
    report = net.load_report
    assert report is not None  # set whenever a caffemodel is loaded
    if report.missing:
        log.warning("no weights for %s (given their fillers)", ", ".join(report.missing))
    if report.ignored:
        log.info("ignored weights of layers the net lacks: %s", ", ".join(report.ignored))
    count = sum(p.numel() for p in net.parameters())
    cli.wrote(args.out, f"{len(report.loaded)} layers with weights, {count:,} parameters")


if __name__ == "__main__":
    sys.exit(main())
