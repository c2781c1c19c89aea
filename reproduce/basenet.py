"""A small VGG16-shaped classifier: the demo's stand-in for the ILSVRC VGG16 caffemodel.

FCN-32s starts from a classifier, not from random weights. The real one (VGG16, 528 MB)
cannot ship with the project, so the demo trains a narrow copy of it on the synthetic
data: the same layer names and structure (conv1_1 .. conv5_3, five 2x2 max pools, fc6
as an InnerProduct over the 7x7 pool5 map of a 224x224 input, fc7, fc8), in the same
legacy V1 net format and V1-layout caffemodel with legacy 4-D blob dims. Everything
downstream (transplant of fc6/fc7 into 7x7 and 1x1 convolutions, staged training) then
runs exactly as it would on the real file.

The classification task: a random crop of a training image, pasted at a random place
on a zero (mean-valued) 224x224 canvas, labelled with the class covering most of its
pixels. The zero surround is what the FCN sees too (conv1_1 pads by 100), and the crop
sizes match the object sizes, so the features transfer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F

import porting
from porting.prototxt import parse_prototxt
from prototxt.fcn import FC_WIDTH, VGG16_STAGES, scaled_width
from reproduce.datasets import IGNORE_LABEL, Sample

INPUT_SIZE = 224  # VGG16's: five 2x2 pools bring it to the 7x7 map fc6 is built for
FC6_MAP = 7


def base_net_text(num_classes: int, width: float, *, name: str = "VGG_ILSVRC_16_layers") -> str:
    """The classifier as V1 net text (`layers { type: CONVOLUTION }`, `input_dim`), like VGG16's file.

    Channel widths are VGG16's times `width` with the FCN generator's rounding, so the
    transplanted blobs fit the FCN nets built with the same `width`. Weight fillers are
    MSRA (He et al.) so the plain 16-layer stack trains from scratch.
    """
    lines = [f'name: "{name}"', 'input: "data"'] + [f"input_dim: {d}" for d in (1, 3, INPUT_SIZE, INPUT_SIZE)]
    filler = 'weight_filler { type: "msra" } bias_filler { type: "constant" value: 0 }'

    def layer(body: str) -> None:
        lines.append("layers {\n  " + body + "\n}")

    bottom = "data"
    for stage, (channels, convs) in enumerate(VGG16_STAGES, start=1):
        for index in range(1, convs + 1):
            conv = f"conv{stage}_{index}"
            layer(
                f'bottom: "{bottom}" top: "{conv}" name: "{conv}" type: CONVOLUTION\n'
                f"  convolution_param {{ num_output: {scaled_width(channels, width)} pad: 1 kernel_size: 3 {filler} }}"
            )
            layer(f'bottom: "{conv}" top: "{conv}" name: "relu{stage}_{index}" type: RELU')
            bottom = conv
        pool = f"pool{stage}"
        layer(
            f'bottom: "{bottom}" top: "{pool}" name: "{pool}" type: POOLING\n'
            "  pooling_param { pool: MAX kernel_size: 2 stride: 2 }"
        )
        bottom = pool
    fc_outputs = (("fc6", scaled_width(FC_WIDTH, width)), ("fc7", scaled_width(FC_WIDTH, width)), ("fc8", num_classes))
    for fc, outputs in fc_outputs:
        layer(
            f'bottom: "{bottom}" top: "{fc}" name: "{fc}" type: INNER_PRODUCT\n'
            f"  inner_product_param {{ num_output: {outputs} {filler} }}"
        )
        if fc != "fc8":
            index = fc[2:]
            layer(f'bottom: "{fc}" top: "{fc}" name: "relu{index}" type: RELU')
            layer(
                f'bottom: "{fc}" top: "{fc}" name: "drop{index}" type: DROPOUT\n'
                "  dropout_param { dropout_ratio: 0.5 }"
            )
        bottom = fc
    return "\n".join(lines) + "\n"


class CropSampler:
    """Random labelled crops of segmentation samples, pasted on a zero canvas."""

    def __init__(self, samples: Sequence[Sample], num_classes: int, crop_range: tuple[int, int], seed: int) -> None:
        if not samples:
            raise ValueError("CropSampler needs at least one sample")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.crop_range = crop_range
        self.rng = np.random.default_rng(seed)

    def _one(self) -> tuple[torch.Tensor, int] | None:
        sample = self.samples[int(self.rng.integers(len(self.samples)))]
        _, height, width = sample.image.shape
        size = int(self.rng.integers(self.crop_range[0], self.crop_range[1] + 1))
        ch, cw = min(size, height), min(size, width)
        top = int(self.rng.integers(0, height - ch + 1))
        left = int(self.rng.integers(0, width - cw + 1))
        label = sample.label[top : top + ch, left : left + cw]
        counts = torch.bincount(label[label != IGNORE_LABEL].flatten(), minlength=self.num_classes)
        if counts.sum() == 0:
            return None
        crop = sample.image[:, top : top + ch, left : left + cw]
        if self.rng.random() < 0.5:
            crop = crop.flip(-1)
        canvas = torch.zeros(3, INPUT_SIZE, INPUT_SIZE)
        y = int(self.rng.integers(0, INPUT_SIZE - ch + 1))
        x = int(self.rng.integers(0, INPUT_SIZE - cw + 1))
        canvas[:, y : y + ch, x : x + cw] = crop
        return canvas, int(counts.argmax())

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        while len(images) < size:
            drawn = self._one()
            if drawn is not None:
                images.append(drawn[0])
                labels.append(drawn[1])
        return torch.stack(images), torch.tensor(labels)


def train_base_net(
    samples: Sequence[Sample],
    out: str | Path,
    *,
    num_classes: int = 21,
    width: float = 1 / 16,
    steps: int = 150,
    batch_size: int = 16,
    lr: float = 2e-3,
    crop_range: tuple[int, int] = (24, 64),
    seed: int = 0,
    log: TextIO | None = None,
) -> Path:
    """Train the classifier and write `out` (.caffemodel, V1 layout, legacy dims) and its net text.

    The net text goes next to it as `<out stem>_deploy.prototxt`. Training uses Adam on
    the CaffeNet built from the V1 text (the porting code path the real file takes);
    the optimizer is irrelevant to what FCN inherits, only the weights are.
    """
    log = log if log is not None else sys.stdout
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = base_net_text(num_classes, width)
    prototxt_path = out.with_name(f"{out.stem}_deploy.prototxt")
    prototxt_path.write_text(text)
    torch.manual_seed(seed)
    net = porting.CaffeNet(parse_prototxt(text, str(prototxt_path)), phase="TRAIN")
    sampler = CropSampler(samples, num_classes, crop_range, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    correct = seen = 0
    net.train()
    for step in range(1, steps + 1):
        images, labels = sampler.batch(batch_size)
        logits = net(images)["fc8"]
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if step % 25 == 0 or step == steps:
            log.write(
                f"base net step {step}/{steps}: loss {loss.item():.3f}, crop accuracy {correct / seen:.2f} "
                f"({time.perf_counter() - start:.0f} s)\n"
            )
            log.flush()
            correct = seen = 0
    porting.write_caffemodel(net, out, layout="v1", legacy_dims=True)
    return out
