"""eval.metrics against hand-computed matrices, torchmetrics, and the authors' demo prediction."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from eval.metrics import ConfusionMatrix, metrics_from_confusion


def pixels_from_counts(counts: list[list[int]], ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, label) pixel vectors with counts[i][j] pixels of class i predicted j, plus 255s, shuffled."""
    labels, preds = [], []
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            labels += [i] * count
            preds += [j] * count
    labels += [255] * ignored
    preds += [0] * ignored
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return torch.tensor(preds)[order], torch.tensor(labels, dtype=torch.uint8)[order]


def test_hand_computed_with_class_predicted_but_absent_from_ground_truth():
    # class 2 never occurs in the ground truth but is predicted once: no accuracy, IU 0
    counts = [[3, 1, 1], [2, 4, 0], [0, 0, 0]]
    confusion = ConfusionMatrix(3)
    confusion.update(*pixels_from_counts(counts, ignored=7))
    assert confusion.hist.tolist() == counts
    assert confusion.n_ignored == 7
    m = confusion.compute()
    assert m.pixel_acc == pytest.approx(float(F(7, 11)))
    assert m.per_class_acc[:2] == pytest.approx([float(F(3, 5)), float(F(4, 6))])
    assert math.isnan(m.per_class_acc[2])
    assert m.mean_acc == pytest.approx(float((F(3, 5) + F(4, 6)) / 2))
    # IU = n_ii / (t_i + sum_j n_ji - n_ii): 3 / (5 + 5 - 3), 4 / (6 + 5 - 4), 0 / (0 + 1 - 0)
    assert m.per_class_iu == pytest.approx([float(F(3, 7)), float(F(4, 7)), 0.0])
    assert m.mean_iu == pytest.approx(float((F(3, 7) + F(4, 7)) / 3))
    assert m.fw_iu == pytest.approx(float((5 * F(3, 7) + 6 * F(4, 7)) / 11))
    assert m.n_pixels == 11


def test_class_absent_everywhere_is_left_out_of_the_means():
    m = metrics_from_confusion(np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]]))
    assert math.isnan(m.per_class_iu[2]) and math.isnan(m.per_class_acc[2])
    assert m.mean_iu == pytest.approx(float((F(3, 6) + F(4, 7)) / 2))
    assert m.mean_acc == pytest.approx(float((F(3, 4) + F(4, 6)) / 2))
    assert m.fw_iu == pytest.approx(float((4 * F(3, 6) + 6 * F(4, 7)) / 10))


def test_all_ignored_images_add_nothing():
    confusion = ConfusionMatrix(3)
    confusion.update(torch.zeros(4, 5, dtype=torch.int64), torch.full((4, 5), 255))
    assert confusion.hist.sum() == 0 and confusion.n_ignored == 20
    m = confusion.compute()
    assert all(math.isnan(v) for v in (m.pixel_acc, m.mean_acc, m.mean_iu, m.fw_iu))
    counts = [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    confusion.update(*pixels_from_counts(counts))
    confusion.update(torch.ones(3, 3, dtype=torch.int64), torch.full((3, 3), 255, dtype=torch.uint8))
    assert confusion.compute() == metrics_from_confusion(np.array(counts))


def test_labels_out_of_range_are_ignored_and_inputs_untouched():
    pred = torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32)
    label = torch.tensor([0, 1, 3, -1, 200], dtype=torch.int32)
    before = (pred.clone(), label.clone())
    confusion = ConfusionMatrix(3)
    confusion.update(pred, label)
    assert confusion.hist.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert confusion.n_ignored == 3
    assert torch.equal(pred, before[0]) and torch.equal(label, before[1])
    assert confusion.hist.dtype == torch.int64


def test_prediction_out_of_range_is_reported():
    confusion = ConfusionMatrix(3)
    confusion.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1 scored pixels"):
        confusion.compute()
    with pytest.raises(ValueError, match="shape"):
        confusion.update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_matches_torchmetrics_on_random_images():
    n = 21
    g = torch.Generator().manual_seed(1)
    confusion = ConfusionMatrix(n)
    ref_cm = MulticlassConfusionMatrix(n, ignore_index=255)
    ref_iu = MulticlassJaccardIndex(n, average=None, ignore_index=255)
    ref_fw = MulticlassJaccardIndex(n, average="weighted", ignore_index=255)
    ref_pixel = MulticlassAccuracy(n, average="micro", ignore_index=255)
    ref_mean = MulticlassAccuracy(n, average="macro", ignore_index=255)
    for h, w in [(37, 53), (64, 48), (5, 101)]:
        label = torch.randint(0, n, (h, w), generator=g)
        label[torch.rand(h, w, generator=g) < 0.1] = 255
        # mostly right, like a trained net, so the metrics are not all near 1/n
        pred = torch.where(torch.rand(h, w, generator=g) < 0.6, label, torch.randint(0, n, (h, w), generator=g))
        pred = pred.masked_fill(pred == 255, 0)
        confusion.update(pred, label)
        for ref in (ref_cm, ref_iu, ref_fw, ref_pixel, ref_mean):
            ref.update(pred.reshape(-1), label.reshape(-1))
    m = confusion.compute()
    assert torch.equal(confusion.hist, ref_cm.compute())
    assert m.per_class_iu == pytest.approx(ref_iu.compute().tolist(), rel=1e-5)
    assert m.mean_iu == pytest.approx(ref_iu.compute().mean().item(), rel=1e-5)
    assert m.fw_iu == pytest.approx(ref_fw.compute().item(), rel=1e-5)
    assert m.pixel_acc == pytest.approx(ref_pixel.compute().item(), rel=1e-5)
    assert m.mean_acc == pytest.approx(ref_mean.compute().item(), rel=1e-5)


def test_authors_demo_prediction_against_a_hand_count(reference):
    """demo/output.png (the authors' FCN-8s output, RGB) scored against demo/label.png."""
    label_image = Image.open(reference / "demo" / "label.png")
    label = np.array(label_image)
    # decode the RGB prediction with the palette stored in VOC's own label file
    palette = np.asarray(label_image.getpalette(), dtype=np.int64).reshape(-1, 3)
    rgb = np.asarray(Image.open(reference / "demo" / "output.png").convert("RGB"), dtype=np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lookup = {int((r << 16) | (g << 8) | b): index for index, (r, g, b) in enumerate(palette[:21])}
    assert set(np.unique(code).tolist()) <= set(lookup)
    pred = np.vectorize(lookup.__getitem__)(code)

    valid = label != 255
    classes = range(21)
    tp = np.array([np.sum((pred == c) & (label == c) & valid) for c in classes])
    gt = np.array([np.sum((label == c) & valid) for c in classes])
    predicted = np.array([np.sum((pred == c) & valid) for c in classes])
    union = gt + predicted - tp
    ious = [tp[c] / union[c] for c in classes if union[c]]
    accs = [tp[c] / gt[c] for c in classes if gt[c]]
    expected_fw = sum(gt[c] * tp[c] / union[c] for c in classes if gt[c]) / valid.sum()

    confusion = ConfusionMatrix(21)
    confusion.update(torch.from_numpy(pred), torch.from_numpy(label))
    m = confusion.compute()
    assert confusion.n_ignored == int((~valid).sum())
    assert m.pixel_acc == pytest.approx(tp.sum() / valid.sum(), rel=1e-12)
    assert m.mean_acc == pytest.approx(np.mean(accs), rel=1e-12)
    assert m.mean_iu == pytest.approx(np.mean(ious), rel=1e-12)
    assert m.fw_iu == pytest.approx(expected_fw, rel=1e-12)
    assert len(ious) == 3  # background, bicycle, person: the other 18 classes drop out of the means
