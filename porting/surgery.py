"""Weight surgery: how FCNs are initialized from a classifier or from the previous stage.

FCN training never starts from random weights: FCN-32s starts from the ILSVRC VGG16
classifier with its fully connected layers recast as convolutions, each later stage
starts from the previous one, and every upsampling Deconvolution starts as bilinear
interpolation. These are the authors' `surgery.transplant` and `surgery.interp` steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ShapeMismatchError
from .fillers import bilinear_filter


def bilinear_kernel(channels: int, kernel_size: int) -> np.ndarray:
    """A (channels, channels, k, k) Deconvolution weight that upsamples each channel bilinearly.

    The 2-D filter is `porting.fillers.bilinear_filter` (the authors' `upsample_filt`,
    Caffe's BilinearFiller). With kernel 2s and stride s this is exact linear interpolation
    between input pixels placed s apart. The weight is diagonal so channels (classes)
    never mix.
    """
    if channels < 1 or kernel_size < 1:
        raise ValueError(f"bilinear_kernel needs channels >= 1 and kernel_size >= 1, got {channels}, {kernel_size}")
    filt = bilinear_filter(kernel_size).numpy()
    weight = np.zeros((channels, channels, kernel_size, kernel_size), dtype=np.float32)
    weight[np.arange(channels), np.arange(channels)] = filt
    return weight


def set_bilinear_upsampling(net, layers: Iterable[str] | None = None) -> list[str]:
    """Set every Deconvolution layer (or only `layers`) to bilinear interpolation.

    The weight must be square and either (C, C, k, k) or (C, 1, k, k) (one filter per
    channel, `group: C`), as in the authors' `interp`, which writes the filter where input
    channel i meets output channel i and leaves every other entry as it was: zero from
    Caffe's default filler, or the cross-channel weights a previous stage learned (the
    CVPR presets' FCN-16s `upscore2`, copied into FCN-8s). Returns the names of the layers
    it set.
    """
    deconvs = [layer.name for layer in net.net_param.layer if layer.type == "Deconvolution"]
    if layers is None:
        names = deconvs
    else:
        names = list(layers)
        unknown = [name for name in names if name not in deconvs]
        if unknown:
            raise ValueError(f"not Deconvolution layers of this net: {', '.join(unknown)}")
    current = net.blobs_numpy()
    updated: dict[str, list[np.ndarray]] = {}
    for name in names:
        weight = current[name][0]
        c_in, c_out, kh, kw = weight.shape
        if kh != kw:
            raise ShapeMismatchError(
                name, 0, (c_in, c_out, kh, kh), weight.shape, "bilinear upsampling needs a square kernel"
            )
        if c_out == c_in:
            new = weight.copy()
            new[np.arange(c_in), np.arange(c_in)] = bilinear_filter(kh).numpy()
        elif c_out == 1:
            new = np.repeat(bilinear_kernel(1, kh), c_in, axis=0)
        else:
            raise ShapeMismatchError(
                name,
                0,
                (c_in, c_in, kh, kw),
                weight.shape,
                "bilinear upsampling needs input channels == output channels or group == channels",
            )
        updated[name] = [new] + current[name][1:]
    net.load_blobs(updated, source="bilinear upsampling", strict=False)
    return names


@dataclass
class TransplantReport:
    """What `transplant` did with each source blob, for the training log."""

    copied: list[str] = field(default_factory=list)
    coerced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary, one line per category that is not empty."""
        out = []
        for title, items in (
            ("copied", self.copied),
            ("coerced", self.coerced),
            ("skipped", self.skipped),
            ("kept initial values", self.untouched),
        ):
            if items:
                out.append(f"{title}: {', '.join(items)}")
        return out


def _squeeze_legacy(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Legacy 4-D blob dims pad with leading ones (num, channels, height, width)."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def transplant(net, blobs: Mapping[str, Sequence[np.ndarray]]) -> TransplantReport:
    """Copy `blobs` into `net` by layer name, reshaping where only the shape differs.

    A blob with the same number of elements is copied in its memory order, which turns
    an InnerProduct weight into the equivalent convolution kernel of any classifier cast
    by `porting.fully_convolutional`: (out, C*H*W) -> (out, C, H, W) for the first cast
    layer (VGG16 fc6 4096x25088 -> 4096x512x7x7, CaffeNet fc6 4096x9216 -> 4096x256x6x6)
    and (out, in) -> (out, in, 1, 1) after it. Layers the net lacks (the final
    classifier) and blobs whose element count differs are skipped and reported; layers
    the source lacks keep their initial values (zero for the score layers, as Caffe's
    constant filler).
    """
    report = TransplantReport()
    current = net.blobs_numpy()
    updated: dict[str, list[np.ndarray]] = {}
    for name, source_blobs in blobs.items():
        if not len(source_blobs):
            continue
        if name not in current:
            report.skipped.append(f"{name} (not in the net)")
            continue
        target_blobs = list(current[name])
        for index, source in enumerate(source_blobs):
            label = f"{name}.{index}"
            if index >= len(target_blobs):
                report.skipped.append(f"{label} (the net's layer has {len(target_blobs)} blobs)")
                continue
            target = target_blobs[index]
            source = np.asarray(source, dtype=np.float32)
            if source.size != target.size:
                report.skipped.append(f"{label} ({tuple(source.shape)} cannot become {tuple(target.shape)})")
                continue
            target_blobs[index] = source.reshape(target.shape).copy()
            if _squeeze_legacy(source.shape) == _squeeze_legacy(target.shape):
                report.copied.append(label)
            else:
                report.coerced.append(f"{label} {tuple(source.shape)} -> {tuple(target.shape)}")
        updated[name] = target_blobs
    report.untouched = [name for name in current if name not in blobs and current[name]]
    net.load_blobs(updated, source="transplant", strict=False)
    return report


def select_rows(blobs: list[np.ndarray], rows: Sequence[int | None]) -> list[np.ndarray]:
    """A layer's blobs with their first axis (a Convolution's outputs) rebuilt row by row.

    Row i of every blob is the source's row `rows[i]`, or zeros where `rows[i]` is None: how
    a score layer trained for one class list starts for another (matching classes keep
    their filters and biases, new classes start at zero, as FCN's score layers do).
    """
    out = []
    for blob in blobs:
        blob = np.asarray(blob, dtype=np.float32)
        new = np.zeros((len(rows), *blob.shape[1:]), dtype=np.float32)
        for target, source in enumerate(rows):
            if source is not None:
                new[target] = blob[source]
        out.append(new)
    return out
