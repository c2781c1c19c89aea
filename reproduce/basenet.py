"""A small VGG16-shaped classifier: the demo's stand-in for the ILSVRC VGG16 caffemodel.

FCN-32s starts from a classifier, not from random weights. The real one (VGG16, 528 MB)
cannot ship with the project, so the demo trains a narrow copy of it on the synthetic
data: the same layer names and structure (conv1_1 .. conv5_3, five 2x2 max pools, fc6
as an InnerProduct over the 7x7 pool5 map of a 224x224 input, fc7, fc8), in the same
legacy V1 net format and V1-layout caffemodel with legacy 4-D blob dims. Everything
downstream (transplant of fc6/fc7 into 7x7 and 1x1 convolutions, staged training) then
runs exactly as it would on the real file.

The classification task is the one each FCN-32s output location solves: a window of a
training image around a pixel, pasted on a zero (mean-valued) 224x224 canvas with that
pixel at the centre, labelled with the pixel's class. The zero surround is what the FCN
sees too (conv1_1 pads by 100), so the features, and fc6-fc8, transfer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import porting
from fcndata import IGNORE_LABEL, NUM_CLASSES, Sample
from porting.prototxt import parse_prototxt, to_text
from porting.upgrade import downgrade_net
from prototxt import vgg16

logger = logging.getLogger(__name__)

INPUT_SIZE = vgg16.INPUT_SIZE
PIXEL_SCALE = 64.0  # rough std of a mean-subtracted 0..255 pixel


def base_net_text(num_classes: int, width: float, *, name: str = vgg16.NAME) -> str:
    """The classifier (`prototxt.vgg16.classifier`) as V1 net text (`layers { type: CONVOLUTION }`,
    `input_dim`), like VGG16's file.

    Channel widths are VGG16's times `width` with the FCN generator's rounding, so the
    transplanted blobs fit the FCN nets built with the same `width`. Weight fillers are
    MSRA (He et al.) so the plain 16-layer stack trains from scratch; MSRA assumes
    unit-scale inputs, so conv1_1's are shrunk by the pixel scale (0..255 minus the mean)
    to keep every activation, and the first logits, near 1.
    """
    zero = dict(type="constant", value=0)
    msra = dict(weight_filler=dict(type="msra"), bias_filler=zero)
    first_std = float(f"{math.sqrt(2 / (3 * 3 * 3)) / PIXEL_SCALE:.6g}")  # the demo's recorded runs used 6 digits
    first = dict(weight_filler=dict(type="gaussian", std=first_std), bias_filler=zero)
    net = vgg16.classifier(num_classes, width=width, fillers=msra, first_fillers=first).to_proto()
    net.name = name
    return to_text(downgrade_net(net))


class CentreSampler:
    """Views of segmentation samples centred on a labelled pixel, labelled with that pixel's class.

    That is what one FCN output location does: classify the pixel at the centre of its
    receptive field, seeing the image around it and the zero padding beyond its edges.
    The class is drawn uniformly among those present in the image, so objects come up as
    often as background; the window side is drawn from `view_range`.
    """

    def __init__(self, samples: Sequence[Sample], view_range: tuple[int, int], seed: int) -> None:
        self.samples = [sample for sample in samples if bool((sample.label != IGNORE_LABEL).any())]
        if not self.samples:
            raise ValueError("CentreSampler needs at least one sample with a labelled pixel")
        self.view_range = view_range
        self.rng = np.random.default_rng(seed)

    def one(self) -> tuple[torch.Tensor, int]:
        sample = self.samples[int(self.rng.integers(len(self.samples)))]
        image, label = sample.image, sample.label
        if self.rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        classes = label[label != IGNORE_LABEL].unique()
        target = int(classes[int(self.rng.integers(len(classes)))])
        ys, xs = torch.nonzero(label == target, as_tuple=True)
        pick = int(self.rng.integers(len(ys)))
        y, x = int(ys[pick]), int(xs[pick])
        half = int(self.rng.integers(self.view_range[0], self.view_range[1] + 1)) // 2
        centre = INPUT_SIZE // 2
        top, left = max(0, y - half, y - centre), max(0, x - half, x - centre)
        bottom = min(label.shape[0], y + half, y - centre + INPUT_SIZE)
        right = min(label.shape[1], x + half, x - centre + INPUT_SIZE)
        canvas = torch.zeros(3, INPUT_SIZE, INPUT_SIZE)
        canvas[:, centre - (y - top) : centre + (bottom - y), centre - (x - left) : centre + (right - x)] = image[
            :, top:bottom, left:right
        ]
        return canvas, target

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(self.one() for _ in range(size)))
        return torch.stack(images), torch.tensor(labels)


def train_base_net(
    samples: Sequence[Sample],
    out: str | Path,
    *,
    num_classes: int = NUM_CLASSES,
    width: float = 1 / 8,
    steps: int = 500,
    batch_size: int = 16,
    lr: float = 3e-4,
    view_range: tuple[int, int] = (32, 128),
    seed: int = 0,
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Train the classifier and write `out` (.caffemodel, V1 layout, legacy dims) and its net text.

    The net text goes next to it as `<out stem>_deploy.prototxt`. Training uses Adam on
    the CaffeNet built from the V1 text (the porting code path the real file takes);
    the optimizer is irrelevant to what FCN inherits, only the weights are. The net runs
    in its TEST phase, without dropout: within a few hundred steps dropout holds the
    plain 16-layer stack at the class prior (measured), and FCN training brings it back.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = base_net_text(num_classes, width)
    prototxt_path = out.with_name(f"{out.stem}_deploy.prototxt")
    prototxt_path.write_text(text)
    torch.manual_seed(seed)
    net = porting.CaffeNet(parse_prototxt(text, str(prototxt_path)), phase="TEST")
    sampler = CentreSampler(samples, view_range, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    correct = seen = 0
    loss_sum = 0.0
    for step in range(1, steps + 1):
        images, labels = sampler.batch(batch_size)
        logits = net(images)["fc8"]
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        loss_sum += loss.item() * len(labels)
        if step % 25 == 0 or step == steps:
            log(
                f"base net step {step}/{steps}: loss {loss_sum / seen:.3f}, view accuracy {correct / seen:.2f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
            correct = seen = 0
            loss_sum = 0.0
    porting.write_caffemodel(net, out, layout="v1", legacy_dims=True)
    return out


@dataclass(frozen=True)
class BaseNetCheck:
    """How good a start the classifier is: accuracy on held-out views and feature scale."""

    accuracy: float
    chance: float  # accuracy of always answering the most frequent class of these views
    mean_activation: dict[str, float]  # mean post-ReLU value of conv5_3 and fc7

    def line(self) -> str:
        scale = ", ".join(f"{name} {value:.3g}" for name, value in self.mean_activation.items())
        return (
            f"held-out view accuracy {self.accuracy:.2f} (most frequent class {self.chance:.2f}); "
            f"mean activation {scale}"
        )


def check_base_net(
    caffemodel: str | Path,
    samples: Sequence[Sample],
    *,
    views: int = 256,
    view_range: tuple[int, int] = (32, 128),
    seed: int = 1,
) -> BaseNetCheck:
    """Score the written classifier, loaded as FCN-32s will load it, on centred views of `samples`.

    A dead or background-only classifier (accuracy at the most-frequent-class rate, tiny
    activations) gives FCN training nothing to build on; this says so before it starts.
    """
    caffemodel = Path(caffemodel)
    prototxt = caffemodel.with_name(f"{caffemodel.stem}_deploy.prototxt")
    net = porting.load(str(prototxt), str(caffemodel), phase="TEST")
    images, labels = CentreSampler(samples, view_range, seed).batch(views)
    with torch.no_grad():
        trace = net.trace(images)
    predicted = trace["fc8"].argmax(1)
    activation = {name: float(trace[name].clamp(min=0).mean()) for name in ("conv5_3", "fc7")}
    return BaseNetCheck(
        accuracy=float((predicted == labels).float().mean()),
        chance=float(labels.bincount().max()) / len(labels),
        mean_activation=activation,
    )
