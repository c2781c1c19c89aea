"""The README's five-line Python API, run as written on a full-size voc-fcn8s caffemodel in the cache.

The weights have the published deploy net's shapes (the authors' 537 MB file cannot be
downloaded here; seeded random where they decide the labels, see `served_fcn8s`), written
with our caffemodel writer under the authors' file name, served by a local HTTP server on
127.0.0.1 (`test_model_download`'s) and fetched into an empty `FCN_MODELS_DIR` with
`python -m porting.models download voc-fcn8s --mirror URL`, as a user behind a mirror
would. The README's code then runs in a folder holding `photo.jpg`;
its input and labels are checked against OpenCV's Caffe importer fed by OpenCV's own
preprocessing (`cv2.dnn.blobFromImage` on the image in BGR order), and the classes it prints
against the names of OpenCV's labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import MEAN_BGR, opencv_net
from PIL import Image
from test_model_download import server  # noqa: F401  (the 127.0.0.1 HTTP server fixture)

import porting
from porting import models
from porting.surgery import bilinear_kernel

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## A published model in five lines of Python"
HEIGHT, WIDTH = 47, 61


def readme_block() -> str:
    """The first ```python block under SECTION."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text[text.index(SECTION) :], re.DOTALL)
    assert found, f"no python block under {SECTION!r}"
    return found.group(1)


#: the layers that get random weights; the deeper ones stay zero, so the labels come from pool3's
#: skip (stride 8), which resolves a small image's regions, and the file is written fast
RANDOM_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "score_pool3")


@pytest.fixture(scope="module")
def served_fcn8s(tmp_path_factory) -> Path:
    """voc-fcn8s weights of the published shapes (full size, 537 MB) under the authors' file name:
    He-scaled random `RANDOM_LAYERS`, bilinear upsampling, zeros elsewhere. Returns the file."""
    cache = tmp_path_factory.mktemp("served")
    model = models.get("voc-fcn8s")
    net_param = porting.read_prototxt(model.deploy_path())
    net = porting.CaffeNet(net_param, fill=False)  # shapes only: nothing is allocated
    rng = np.random.default_rng(3)
    blobs = {}
    for name, layer in net.layers.items():
        shapes = layer.blob_shapes()
        if layer.layer_type == "Deconvolution":
            blobs[name] = [bilinear_kernel(shapes[0][0], shapes[0][2])]
        elif name in RANDOM_LAYERS:
            weight, bias = shapes
            std = np.float32(np.sqrt(2 / np.prod(weight[1:])))
            blobs[name] = [rng.standard_normal(weight, dtype=np.float32) * std, rng.standard_normal(bias, np.float32)]
        elif shapes:
            blobs[name] = [np.zeros(shape, np.float32) for shape in shapes]
    porting.write_caffemodel((net_param, blobs), cache / model.filename)
    return cache / model.filename


def photo(path: Path) -> np.ndarray:
    """Write an odd-sized JPEG whose regions differ in colour; return its pixels as PIL decodes them (RGB)."""
    rng = np.random.default_rng(0)
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, : WIDTH // 2] = (220, 40, 30)
    rgb[HEIGHT // 3 :, WIDTH // 3 :] = (20, 60, 210)
    rgb = np.clip(rgb + rng.integers(0, 30, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def test_readme_five_lines_run_as_written(served_fcn8s, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    code = readme_block()
    assert len([line for line in code.splitlines() if line and not line.startswith(("import ", "from "))]) == 5
    server.files[served_fcn8s.name] = served_fcn8s.read_bytes()
    cache = tmp_path / "cache"
    monkeypatch.setenv(models.MODELS_DIR_VARIABLE, str(cache))
    assert models.main(["download", "voc-fcn8s", "--mirror", server.url, "--quiet"]) == 0
    assert (cache / served_fcn8s.name).read_bytes() == server.files[served_fcn8s.name]
    del server.files[served_fcn8s.name]
    rgb = photo(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip()

    net, x, labels = namespace["net"], namespace["x"], namespace["labels"]
    assert tuple(labels.shape) == (HEIGHT, WIDTH)
    blob = cv2.dnn.blobFromImage(np.ascontiguousarray(rgb[:, :, ::-1]), 1.0, (WIDTH, HEIGHT), MEAN_BGR, False, False)
    np.testing.assert_allclose(x.numpy(), blob, atol=1e-4, rtol=0)

    cv = opencv_net(models.get("voc-fcn8s").deploy_path(), served_fcn8s)
    cv.setInput(blob)
    scores = cv.forward("score")[0]
    assert scores.shape == (21, HEIGHT, WIDTH)
    top2 = np.sort(scores, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-4 * np.abs(scores).max()  # pixels where float rounding cannot flip the label
    expected = scores.argmax(0)
    assert clear.mean() > 0.99 and len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels.numpy()[clear], expected[clear])

    classes = net.metadata.classes  # the registry's VOC list (tests/test_models.py checks it is the authors')
    assert len(classes) == 21 and printed == str(sorted({classes[i] for i in np.unique(expected[clear])}))
