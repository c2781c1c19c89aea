"""`python -m eval.segment`: label maps and overlays for any images, with any trained FCN.

    python -m eval.segment photo.jpg photos/ --checkpoint fcn8s.pt --out seg/
    python -m eval.segment photo.jpg --model voc-fcn8s --download --out seg/

For each image `<stem>.<ext>`: `seg/<stem>.png`, a palette PNG of the image's size whose
pixel values are the class indices (argmax over the channels of `score`, first maximum
on ties; a multi-task net's first head, e.g. SIFT Flow's semantic `score_sem`); `seg/<stem>_overlay.jpg`, the image blended with the class colours and a legend
of the classes present; with `--scores`, `seg/<stem>.npz` holding `probabilities` (the
softmax of `score`, classes x H x W, float32) and `classes`. The input is prepared as the
net was trained: RGB file -> BGR, 0..255, the net's mean subtracted (`net.metadata`).
Unreadable images are reported and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fcndata.image import MEAN_BGR, load_rgb
from porting import cli
from porting.errors import FcnError, FormatError
from porting.inference import InferenceNet
from porting.metadata import SCORE_BLOB, NetMetadata, complete_metadata, label_blob, read_class_names
from porting.net import CaffeNet
from porting.progress import progress_bar
from porting.transform import CaffeTransform

from .infer import net_device
from .nets import STAGES, NetSource, add_net_arguments, check_net_flags, single_net
from .visualize import overlay, save_label_png

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
#: --precision -> the dtype the forward pass computes in (bf16: `porting.inference.InferenceNet`)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
OVERLAY_QUALITY = 90


def preprocess(image: np.ndarray, mean: Sequence[float] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 BGR minus `mean` (default: the VGG16 mean)."""
    return CaffeTransform(tuple(MEAN_BGR if mean is None else mean))(image)


def check_one_input(net: CaffeNet) -> None:
    """Raise a FormatError for a net that reads more than one input (e.g. NYUDv2's color + HHA)."""
    if len(net.inputs) != 1:
        raise FormatError(
            f"the net reads {len(net.inputs)} inputs ({', '.join(net.inputs)}); eval.segment feeds it one RGB "
            "image: score such a net on its dataset with python -m eval.table"
        )


def score_map(net: CaffeNet, image: np.ndarray, runner: InferenceNet | None = None) -> torch.Tensor:
    """The net's label blob (`porting.metadata.label_blob`) for one RGB image, (classes, H, W) float32
    on the net's device.

    Args:
        net: the net (its metadata prepares the input).
        image: (H, W, 3) uint8 RGB.
        runner: what computes the forward pass in place of `net`, e.g. a bf16 `InferenceNet` of it.
    """
    check_one_input(net)
    x = preprocess(image, net.metadata.mean).to(net_device(net))
    net.eval()
    with torch.inference_mode():
        outputs = (runner or net)(x)
    blob = label_blob(net)
    if blob is None or blob not in outputs:
        raise FormatError(f"the net has no '{SCORE_BLOB}' output blob (outputs: {', '.join(outputs)})")
    scores = outputs[blob]
    if scores.dim() != 4 or tuple(scores.shape[2:]) != image.shape[:2]:
        raise FormatError(
            f"the '{blob}' blob is {tuple(scores.shape)} for a {image.shape[0]}x{image.shape[1]} image; "
            "expected 1 x classes x H x W at the image's size (the net must crop its output to the input)"
        )
    return scores[0].float()


def segment(net: CaffeNet, image: np.ndarray) -> np.ndarray:
    """Class index per pixel, (H, W) int64, for one (H, W, 3) uint8 RGB image.

    The image is prepared as the net expects (BGR, 0..255, `net.metadata.mean` subtracted);
    the label is the first maximum over the channels of `score`.
    """
    return score_map(net, image).argmax(0).cpu().numpy()


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files as given; folders replaced by their image files (by suffix, sorted, not recursive)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def write_outputs(
    out: Path, stem: str, image: np.ndarray, scores: torch.Tensor, classes: Sequence[str], with_scores: bool
) -> None:
    """`<stem>.png`, `<stem>_overlay.jpg` and, with `with_scores`, `<stem>.npz` under `out`."""
    label = scores.argmax(0).cpu().numpy()
    save_label_png(label, out / f"{stem}.png")
    overlay(image, label, classes).save(out / f"{stem}_overlay.jpg", quality=OVERLAY_QUALITY)
    if with_scores:
        probabilities = torch.softmax(scores, dim=0).cpu().numpy().astype(np.float32)
        np.savez_compressed(out / f"{stem}.npz", probabilities=probabilities, classes=np.array(classes))


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "eval.segment",
        "Segment images with a trained FCN: label PNGs (class indices), overlays with a legend, "
        "optionally softmax scores.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders whose images (by suffix) are all segmented",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    add_net_arguments(parser, many=False)
    parser.add_argument("--stage", choices=STAGES, help="with --runs: the stage to use (default: the finest finished)")
    parser.add_argument(
        "--classes-file", type=Path, help="class names, one per line in index order (default: the net's)"
    )
    parser.add_argument("--mean", type=cli.mean, help="input mean B,G,R (default: the net's, else the VGG16 mean)")
    parser.add_argument("--scores", action="store_true", help="also write <stem>.npz with the softmax probabilities")
    cli.add_device(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic of the forward pass: fp32 (exact, default) or bf16 (faster on CPUs with "
        "native bf16 kernels, AVX512-BF16/AMX, and on GPUs; a few pixels may change label)",
    )
    cli.add_quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    mean = args.mean
    device = cli.resolve_device(parser, args.device)
    check_net_flags(args, parser, args.stage)
    images = expand_inputs(args.inputs)
    stems = [path.stem for path in images]
    clash = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clash:
        parser.error(f"two inputs share the name {clash[0]!r}; their outputs would overwrite each other")
    if not images:
        parser.error("no image found in the given folders (suffixes: " + ", ".join(IMAGE_SUFFIXES) + ")")
    cli.setup_logging(args.quiet)
    return cli.run(lambda: run_cli(args, single_net(args, parser, args.stage), images, mean, device))


def segment_images(
    net: CaffeNet,
    images: Sequence[Path],
    out: Path,
    *,
    device: torch.device | str = "cpu",
    write_scores: bool = False,
    progress: bool = True,
    precision: str = "fp32",
) -> tuple[int, int]:
    """Segment every image into `out`: `<stem>.png`, `<stem>_overlay.jpg` (and `<stem>.npz`).

    The input is prepared with `net.metadata` (class names, mean; complete it first with
    `porting.metadata.complete_metadata`). An image that cannot be read is logged and skipped.

    Args:
        net: the net; moved to `device`.
        images: the image files (stems must differ).
        out: output folder (created).
        device: where the net runs.
        write_scores: also write the softmax probabilities.
        progress: a progress bar on stderr.
        precision: a key of `PRECISIONS`: fp32 (exact, the default) or bf16 (faster where the CPU has
            native bf16 kernels; about 99.8% of pixels keep their fp32 label in `python -m bench`).

    Returns:
        (images segmented, images skipped).

    Raises:
        FormatError: a net that reads more than one input.
    """
    check_one_input(net)
    names = net.metadata.classes or ()
    net.to(device)
    runner = None if precision == "fp32" else InferenceNet(net, dtype=PRECISIONS[precision])
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in progress_bar(images, desc="segment", unit="img", enabled=progress):
        try:
            image = load_rgb(path)
            scores = score_map(net, image, runner)
            write_outputs(out, path.stem, image, scores, names, write_scores)
        except FcnError as error:
            failed += 1
            logger.warning("skipped: %s", error)
    return len(images) - failed, failed


def run_cli(
    args: argparse.Namespace,
    source: NetSource,
    images: list[Path],
    mean: tuple[float, ...] | None,
    device: torch.device,
) -> int:
    """The CLI's work: load the net with the flags' metadata, segment, report. Returns the exit status."""
    classes = read_class_names(args.classes_file) if args.classes_file else None
    net = source.load()
    complete_metadata(net, NetMetadata(classes, mean))
    done, failed = segment_images(
        net,
        images,
        args.out,
        device=device,
        write_scores=args.scores,
        progress=not args.quiet,
        precision=args.precision,
    )
    cli.wrote(args.out, f"{done} segmentation(s)" + (f"; {failed} image(s) skipped" if failed else ""))
    return cli.EXIT_ERROR if failed else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
