"""The training loop: accumulation equals a batch, data order, logs, plot and progress.

`TinyNet` stands in for a TRAIN-phase CaffeNet (same interface: `param_specs()`,
`loss_weights`, `forward(data=, label=) -> {"loss": ...}`); test_snapshot and
test_distributed import it from here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import porting
from fcndata.image import Sample
from prototxt import solvers
from reproduce.distributed import DistContext
from reproduce.solver import CaffeSGD, SolverConfig
from reproduce.train import AuthorsOrder, ImageOrder, TrainConfig, Trainer, _RankSampler

ParamInfo = namedtuple("ParamInfo", "layer index parameter lr_mult decay_mult")


class TinyNet(nn.Module):
    """conv-relu-dropout-score, a fixed (lr_mult 0) scale, SoftmaxWithLoss with normalize: false."""

    def __init__(self, dropout: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.score = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            for parameter in (self.conv.weight, self.conv.bias, self.score.weight, self.score.bias):
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        self.fixed = nn.Parameter(torch.full((3, 1, 1), 1.5))
        self.dropout = dropout
        self.loss_weights = {"loss": 1.0}

    def param_specs(self) -> list[ParamInfo]:
        return [
            ParamInfo("conv", 0, self.conv.weight, 1.0, 1.0),
            ParamInfo("conv", 1, self.conv.bias, 2.0, 0.0),
            ParamInfo("score", 0, self.score.weight, 1.0, 1.0),
            ParamInfo("score", 1, self.score.bias, 2.0, 0.0),
            ParamInfo("upscore", 0, self.fixed, 0.0, 1.0),
        ]

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = F.dropout(F.relu(self.conv(data)), self.dropout, self.training)
        score = self.score(hidden) * self.fixed
        # Caffe's normalize: false divides the summed pixel losses by the batch size
        loss = F.cross_entropy(score, label[:, 0], ignore_index=255, reduction="sum") / data.shape[0]
        return {"score": score, "loss": loss}


def make_samples(count: int, sizes: list[tuple[int, int]], seed: int = 0) -> list[Sample]:
    """Random images with labels 0..2 and some ignored (255) pixels, sizes cycling through `sizes`."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        label = rng.integers(0, 3, (height, width))
        label[rng.random((height, width)) < 0.1] = 255
        samples.append(
            Sample(
                torch.from_numpy(rng.standard_normal((3, height, width)).astype(np.float32)),
                torch.from_numpy(label),
                f"img{index}",
            )
        )
    return samples


def fake_caffemodel_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """TinyNet is no CaffeNet, so the caffemodel writer gets a stand-in that records the weights."""
    monkeypatch.setattr(
        porting, "write_caffemodel", lambda net, path: torch.save(net.state_dict(), path), raising=False
    )


def solver_for(net: nn.Module, images_per_update: int) -> CaffeSGD:
    config = SolverConfig(base_lr=0.01, lr_policy="fixed", momentum=0.9, weight_decay=5e-4, iter_size=images_per_update)
    return CaffeSGD(net.param_specs(), config)


def assert_equals_batch_sgd(net, reference, samples, *, lr: float, updates: int) -> None:
    """`net` (trained by our Trainer) equals `reference` trained on one batch of all samples
    by torch.optim.SGD (momentum 0.9, decay 5e-4, per-blob lr/decay multipliers): for a
    fixed rate that is Caffe's update with history = lr * momentum buffer."""
    groups = [
        {"params": [spec.parameter], "lr": lr * spec.lr_mult, "weight_decay": 5e-4 * spec.decay_mult}
        for spec in reference.param_specs()
        if spec.lr_mult
    ]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    data = torch.stack([s.image for s in samples]).double()
    label = torch.stack([s.label for s in samples])[:, None]
    for _ in range(updates):
        optimizer.zero_grad()
        reference(data=data, label=label)["loss"].backward()
        optimizer.step()
    for (name, ours), theirs in zip(net.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=name)


def test_accumulating_single_images_equals_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 per-image passes with gradients summed and scaled equal one batch of the 20 images.

    Reference: a batch forward (loss normalized by batch size, as Caffe's normalize: false)
    and torch.optim.SGD, which for a fixed rate is Caffe's update with history = lr * buffer."""
    fake_caffemodel_writer(monkeypatch)
    samples = make_samples(20, [(9, 11)])
    net = TinyNet(dropout=0.0).double()
    reference = TinyNet(dropout=0.0).double()
    Trainer(
        net, solver_for(net, 20), samples, TrainConfig(images_per_update=20, max_iter=3, display=1, out_dir=tmp_path)
    ).run()
    assert_equals_batch_sgd(net, reference, samples, lr=0.01, updates=3)
    assert not torch.equal(net.conv.weight, TinyNet().conv.weight.double())


def test_data_order_is_seeded_epoch_permutations() -> None:
    order = ImageOrder(seed=7, length=5)
    first_epochs = [order[n] for n in range(15)]
    for epoch in range(3):
        assert sorted(first_epochs[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert first_epochs != [ImageOrder(seed=8, length=5)[n] for n in range(15)]
    assert [ImageOrder(seed=7, length=5)[n] for n in (14, 3, 9)] == [first_epochs[n] for n in (14, 3, 9)]


def test_authors_order_is_their_data_layers_stream_and_goes_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """voc_layers.py: `random.seed(1337)` once, then `random.randint(0, len(indices) - 1)` for the
    first image and after every step. Under their Python 2, randint(0, n - 1) is
    `int(random() * n)` (randrange of a width below 2**53), and Python 3 seeds from an int
    as Python 2 did, so the stream is computed here with Python's own `random`."""
    import random

    fake_caffemodel_writer(monkeypatch)
    samples = make_samples(7, [(5, 6)])
    random.seed(1337)
    stream = [samples[int(random.random() * len(samples))].id for _ in range(3 * 4)]
    assert len(set(stream)) < len(stream)  # with replacement: repeats within 12 draws of 7
    net = TinyNet()
    config = TrainConfig(images_per_update=4, max_iter=3, display=1, out_dir=tmp_path, order="authors")
    result = Trainer(net, solver_for(net, 4), samples, config).run()
    records = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    logged = [r for r in records if "ids" in r]
    assert [r["iter"] for r in logged] == [0, 1, 2]
    assert [i for r in logged for i in r["ids"]] == stream


class ShiftedDataset(torch.utils.data.Dataset):
    """A data-path bug: `ids[i]` names sample i, but item i is sample i + 1."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.ids = [sample.id for sample in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[(index + 1) % len(self.samples)]


class RecordingNet(TinyNet):
    """TinyNet that notes which image each pass saw (pixel (0, 0, 0) of image k holds 1000 + k)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(f"img{int(data[0, 0, 0, 0].item()) - 1000}")
        return super().forward(data, label)


def test_the_log_names_the_images_that_were_trained_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids in log.jsonl are those the samples carried into the passes, so a data path that
    hands over other images than the order says shows in the log."""
    fake_caffemodel_writer(monkeypatch)
    samples = make_samples(5, [(4, 5)])
    for index, sample in enumerate(samples):
        sample.image[0, 0, 0] = 1000 + index
    net = RecordingNet()
    config = TrainConfig(images_per_update=3, max_iter=4, display=0, out_dir=tmp_path, order="authors")
    result = Trainer(net, solver_for(net, 3), ShiftedDataset(samples), config).run()
    records = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    logged = [r["ids"] for r in records if "ids" in r]
    assert [i for ids in logged for i in ids] == net.seen and [len(ids) for ids in logged] == [3] * 4


def test_authors_order_resumes_mid_stream() -> None:
    first = AuthorsOrder(seed=1337, length=11)
    ahead = [first[n] for n in range(40)]
    assert [AuthorsOrder(seed=1337, length=11)[n] for n in (25, 3, 39)] == [ahead[25], ahead[3], ahead[39]]


@pytest.mark.parametrize("order", [ImageOrder, AuthorsOrder])
@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_share_the_same_images_per_update(world_size: int, order) -> None:
    order = order(seed=3, length=13)

    def positions(rank: int, world: int) -> list[int]:
        return list(_RankSampler(order, 2, 5, 20, DistContext(rank, world, rank, torch.device("cpu"))).positions())

    single = positions(0, 1)
    shares = [positions(rank, world_size) for rank in range(world_size)]
    per_rank = 20 // world_size
    for update in range(3):
        combined = [p for share in shares for p in share[update * per_rank : (update + 1) * per_rank]]
        assert combined == single[update * 20 : (update + 1) * 20]


def test_logs_plot_progress_and_final_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_caffemodel_writer(monkeypatch)
    net = TinyNet()
    samples = make_samples(6, [(8, 8), (11, 7), (5, 9)])
    calls = []

    def evaluate(model: nn.Module) -> dict[str, float]:
        calls.append(model.training)
        return {"mean_iu": 0.1 * len(calls)}

    config = TrainConfig(
        images_per_update=2, max_iter=6, display=2, average_loss=3, snapshot_every=4, eval_every=3, out_dir=tmp_path
    )
    with caplog.at_level(logging.INFO, logger="reproduce"):
        result = Trainer(net, solver_for(net, 2), samples, config, evaluate=evaluate).run()
    records = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    assert [r["iter"] for r in records if "loss" in r] == [0, 2, 4]
    assert [(r["iter"], r["mean_iu"]) for r in records if "mean_iu" in r] == [
        (3, pytest.approx(0.1)),
        (6, pytest.approx(0.2)),
    ]
    assert all(r["lr"] == pytest.approx(0.01) and r["images_per_s"] > 0 for r in records if "loss" in r)
    with open(result.log_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["iter", "loss", "lr", "images_per_s", "mean_iu"]
    assert len(rows) == len([r for r in records if "ids" not in r])
    ids = [r for r in records if "ids" in r]
    assert [r["iter"] for r in ids] == list(range(6)) and all(len(r["ids"]) == 2 for r in ids)
    assert {i for r in ids for i in r["ids"]} <= {s.id for s in samples}
    with Image.open(result.plot) as plot:
        assert plot.format == "PNG" and plot.size == (800, 600)
    assert result.iter == 6 and result.caffemodel.is_file()
    assert sorted(p.name for p in tmp_path.glob("snapshot_iter_*.pt")) == ["snapshot_iter_4.pt", "snapshot_iter_6.pt"]
    assert result.snapshot == tmp_path / "snapshot_iter_6.pt"
    displays = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert [d.split(",")[0] for d in displays] == ["Iteration 0", "Iteration 2", "Iteration 4"]
    assert "\r" not in capsys.readouterr().err  # captured stderr is no terminal: no bar


def test_a_run_shorter_than_the_validation_interval_is_validated_after_its_last_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--preset heavy validates every 4000 updates; a 12-update run with --display 10 is still
    validated once, after update 12, and a run with validation off is not."""
    fake_caffemodel_writer(monkeypatch)
    net = TinyNet()
    config = TrainConfig(images_per_update=1, max_iter=12, display=10, eval_every=4000, out_dir=tmp_path / "on")
    result = Trainer(
        net, solver_for(net, 1), make_samples(3, [(5, 5)]), config, evaluate=lambda _: {"mean_iu": 0.5}
    ).run()
    records = [json.loads(line) for line in result.log_jsonl.read_text().splitlines()]
    assert [r["iter"] for r in records if "mean_iu" in r] == [12]
    config = dataclasses.replace(config, eval_every=0, out_dir=tmp_path / "off")
    result = Trainer(
        net, solver_for(net, 1), make_samples(3, [(5, 5)]), config, evaluate=lambda _: {"mean_iu": 0.5}
    ).run()
    assert not [line for line in result.log_jsonl.read_text().splitlines() if "mean_iu" in line]


def test_mismatched_iter_size_is_refused(tmp_path: Path) -> None:
    net = TinyNet()
    with pytest.raises(porting.errors.FcnError, match="iter_size 4 differs from images_per_update 20"):
        Trainer(net, solver_for(net, 4), make_samples(2, [(4, 4)]), TrainConfig(out_dir=tmp_path))


TINY_FCN = """
name: "tiny-fcn"
layer { name: "data" type: "Python" top: "data" top: "label"
  python_param { module: "voc_layers" layer: "SBDDSegDataLayer" param_str: "{'seed': 1337, 'split': 'train'}" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore" param { lr_mult: 0 }
  convolution_param { num_output: 3 kernel_size: 4 stride: 2 bias_term: false group: 3
                      weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "upscore" bottom: "data" top: "cropped" crop_param { axis: 2 offset: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cropped" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalize: false } }
"""


def test_caffenet_accumulation_equals_batch_and_writes_caffemodel(tmp_path: Path) -> None:
    """A real TRAIN-phase CaffeNet: the fixed bilinear deconvolution stays put, the rest
    follows batch SGD exactly, and final.caffemodel holds the trained weights."""
    torch.manual_seed(0)
    net = porting.CaffeNet(porting.parse_prototxt(TINY_FCN, "tiny"), phase="TRAIN").double()
    reference = porting.CaffeNet(porting.parse_prototxt(TINY_FCN, "tiny"), phase="TRAIN").double()
    reference.load_state_dict(net.state_dict())
    bilinear = net.state_dict()["upscore.0"].clone()
    samples = make_samples(4, [(9, 11)])
    solver = CaffeSGD(
        net.param_specs(), SolverConfig(base_lr=0.001, lr_policy="fixed", momentum=0.9, weight_decay=5e-4, iter_size=4)
    )
    result = Trainer(
        net, solver, samples, TrainConfig(images_per_update=4, max_iter=3, display=1, out_dir=tmp_path)
    ).run()
    assert_equals_batch_sgd(net, reference, samples, lr=0.001, updates=3)
    assert torch.equal(net.state_dict()["upscore.0"], bilinear)
    written = porting.read_caffemodel(result.caffemodel)
    for spec in net.param_specs():
        np.testing.assert_allclose(written[spec.layer][spec.index], spec.parameter.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("labels", ["drawn", "all ignored"])
def test_cvpr_presets_make_the_same_updates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labels: str) -> None:
    """`cvpr` is the paper's Caffe (41cf06c): 20 gradients summed, lr 1e-4, decay 5e-4.
    `cvpr-mean` is today's Caffe (0e7a078 divides by iter_size): lr 20 x 1e-4 = 2e-3, decay
    5e-4 / 20 = 2.5e-5. Both must move the weights as torch.optim.SGD on the *summed* batch
    loss with the paper's numbers (for a fixed rate, Caffe's history is lr x torch's momentum
    buffer), up to the float32 rounding of the solver file's base_lr and weight_decay (~3e-8
    relative). The moves are compared, not the weights: with every label ignored there is no
    gradient and weight decay alone moves them (by ~1e-8 of their size per update)."""
    fake_caffemodel_writer(monkeypatch)
    samples = make_samples(20, [(6, 7)])
    if labels == "all ignored":
        samples = [sample._replace(label=torch.full_like(sample.label, 255)) for sample in samples]
    initial = TinyNet(dropout=0.0).double().state_dict()
    moved = {}
    for preset in ("cvpr", "cvpr-mean"):
        config = dataclasses.replace(
            SolverConfig.from_proto(solvers.build(preset, "voc-fcn32s")),
            accumulation=solvers.PRESETS[preset].accumulation,
        )
        net = TinyNet(dropout=0.0).double()
        Trainer(
            net,
            CaffeSGD(net.param_specs(), config),
            samples,
            TrainConfig(images_per_update=20, max_iter=3, display=1, out_dir=tmp_path / preset),
        ).run()
        moved[preset] = {name: value - initial[name] for name, value in net.state_dict().items()}
    mean = SolverConfig.from_proto(solvers.build("cvpr-mean", "voc-fcn32s"))
    assert (mean.base_lr, mean.weight_decay, mean.iter_size) == (pytest.approx(2e-3), pytest.approx(2.5e-5), 20)

    reference = TinyNet(dropout=0.0).double()
    groups = [
        {"params": [spec.parameter], "lr": 1e-4 * spec.lr_mult, "weight_decay": 5e-4 * spec.decay_mult}
        for spec in reference.param_specs()
        if spec.lr_mult
    ]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    data = torch.stack([s.image for s in samples]).double()
    label = torch.stack([s.label for s in samples])[:, None]
    for _ in range(3):
        optimizer.zero_grad()
        (reference(data=data, label=label)["loss"] * len(samples)).backward()  # the sum of the 20 losses
        optimizer.step()
    for name, theirs in reference.state_dict().items():
        move = theirs - initial[name]
        torch.testing.assert_close(moved["cvpr"][name], move, rtol=1e-6, atol=1e-20, msg=name)
        torch.testing.assert_close(moved["cvpr-mean"][name], move, rtol=1e-6, atol=1e-20, msg=name)
    assert moved["cvpr"]["conv.weight"].abs().min() > 0  # every weight moved: by decay at least
