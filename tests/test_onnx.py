"""ONNX export: one file per net serves every input size and matches PyTorch in ONNX Runtime.

The nets are every published net generated under prototxt/<net>/deploy.prototxt (at
1/16 width; FCN-8s and FCN-AlexNet also at full width), the ILSVRC classifiers of Caffe's
model zoo, and nets made of every layer type the project supports, all with seeded
random weights. Each exported file is run by ONNX Runtime (an independent implementation
of every op) at several batch sizes and odd spatial sizes it was not traced at, and every
output blob is compared; the CUDA provider joins the CPU one on a machine with a GPU.
Caffe's LRN is exported as ONNX's own LRN operator (across channels) or as an exact
zero-padded average (within a channel).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import (
    VOC_NETS,
    deploy_net,
    layer_net,
    randomize,
    relative_difference,
    write_net,
)

from porting import CaffeNet, read_prototxt, save_checkpoint
from porting.numerics import onnxruntime_provider, set_fp32_precision
from porting.onnx import MIN_OPSET, export_onnx, main
from prototxt import nets

TOLERANCE = 1e-4
REDUCED_SIZES = [(2, 37, 53), (1, 64, 64), (1, 101, 77)]
FULL_SIZES = [(1, 64, 64), (1, 97, 131)]
ROOT = Path(__file__).resolve().parents[1]
#: every net whose generated deploy file is in the repository
PUBLISHED = sorted(path.parent.name for path in (ROOT / "prototxt").glob("*/deploy.prototxt"))


def providers() -> list[str]:
    """ONNX Runtime providers that can actually run here: CPU, plus CUDA where torch sees a GPU."""
    found = ["CPUExecutionProvider"]
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        found.append("CUDAExecutionProvider")
    return found


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def session(path: Path, provider: str) -> ort.InferenceSession:
    set_fp32_precision()  # the torch side of the parity: IEEE fp32, as Caffe
    sess = ort.InferenceSession(str(path), providers=[onnxruntime_provider(provider)])
    assert sess.get_providers()[0] == provider, f"{provider} fell back to {sess.get_providers()}"
    return sess


def random_inputs(
    net: CaffeNet, batch: int, height: int, width: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One random array per input: (batch, C, height, width) for 4-D inputs, else the built shape with `batch`."""
    arrays = {}
    for name in net.inputs:
        shape = net.input_shapes[name]
        shape = (batch, shape[1], height, width) if len(shape) == 4 else (batch, *shape[1:])
        arrays[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(50)
    return arrays


def check_parity(net: CaffeNet, path: Path, provider: str, sizes, seed: int = 0) -> None:
    """Every output blob of ONNX Runtime equals PyTorch's at every (batch, height, width)."""
    sess = session(path, provider)
    rng = np.random.default_rng(seed)
    names = [o.name for o in sess.get_outputs()]
    for batch, height, width in sizes:
        inputs = random_inputs(net, batch, height, width, rng)
        with torch.inference_mode():
            expected = net(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        got = dict(zip(names, sess.run(None, inputs)))
        where = f"{path.name} at batch {batch}, {height}x{width} on {provider}"
        for name in net.outputs:
            assert got[name].shape == tuple(expected[name].shape), f"{name}: {where}"
            assert relative_difference(got[name], expected[name].numpy()) < TOLERANCE, f"{name}: {where}"
        argmax = f"{net.outputs[0]}_argmax"
        if argmax in got:
            np.testing.assert_array_equal(got[argmax], got[net.outputs[0]].argmax(axis=1))


def published_net(name: str, width: float) -> CaffeNet:
    """A published net at `width` (generated), or its deploy file as written where the generator lacks it."""
    definition = (
        nets.build(name, "deploy", width=width)
        if name in nets.NETS
        else read_prototxt(ROOT / "prototxt" / name / "deploy.prototxt")
    )
    return randomize(CaffeNet(definition), seed=PUBLISHED.index(name), bilinear_deconv=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[CaffeNet, Path]]:
    """Each published net at 1/16 width, exported once with the argmax output when first asked for."""
    directory = tmp_path_factory.mktemp("onnx")

    class Exports(dict):
        def __missing__(self, name: str) -> tuple[CaffeNet, Path]:
            net = published_net(name, 1 / 16)
            path = directory / f"{name}.onnx"
            export_onnx(net, path, argmax=True)
            self[name] = net, path
            return self[name]

    return Exports()


@pytest.fixture(scope="module")
def reduced(exported) -> dict[str, tuple[CaffeNet, Path]]:
    """The four VOC VGG16 nets at 1/16 width (from `exported`)."""
    return {name: exported[name] for name in VOC_NETS}


@pytest.mark.parametrize("provider", providers())
@pytest.mark.parametrize("name", PUBLISHED)
def test_published_nets_match_pytorch_at_every_size(exported, name, provider):
    net, path = exported[name]
    check_parity(net, path, provider, REDUCED_SIZES)


def test_graph_is_valid_with_dynamic_batch_height_width(reduced):
    _, path = reduced["voc-fcn8s"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert opset(model) >= MIN_OPSET
    (data,) = model.graph.input
    dims = data.type.tensor_type.shape.dim
    assert data.name == "data" and dims[1].dim_value == 3
    assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))
    assert [o.name for o in model.graph.output] == ["score", "score_argmax"]
    assert model.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert {"Shape", "Slice"} <= {node.op_type for node in model.graph.node}, "Crop must follow the input size"


def test_full_width_fcn8s_matches_pytorch(tmp_path, reference):
    net = randomize(CaffeNet(deploy_net(reference, "voc-fcn8s")), seed=7)
    path = tmp_path / "fcn8s.onnx"
    export_onnx(net, path)
    for provider in providers():
        check_parity(net, path, provider, FULL_SIZES, seed=1)


def test_full_width_fcn_alexnet_exports_lrn_as_onnx_lrn(tmp_path):
    net = published_net("voc-fcn-alexnet", 1.0)
    path = tmp_path / "fcn-alexnet.onnx"
    export_onnx(net, path)
    nodes = onnx.load(str(path)).graph.node
    lrn = [node for node in nodes if node.op_type == "LRN"]
    assert len(lrn) == 2 and not any(node.op_type == "AveragePool" for node in nodes)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in lrn[0].attribute}
    caffe = net.layers["norm1"]
    assert attributes == pytest.approx({"size": caffe.size, "alpha": caffe.alpha, "beta": caffe.beta, "bias": caffe.k})
    for provider in providers():
        check_parity(net, path, provider, FULL_SIZES, seed=3)


#: one net of every layer type a deploy net can hold, with the options that change their arithmetic
EVERY_LAYER = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "across" type: "LRN" bottom: "conv1" top: "across" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "within" type: "LRN" bottom: "across" top: "within"
  lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 norm_region: WITHIN_CHANNEL } }
layer { name: "pool_max" type: "Pooling" bottom: "across" top: "pool_max" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_ave" type: "Pooling" bottom: "within" top: "pool_ave" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool_max" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 2 } }
layer { name: "drop" type: "Dropout" bottom: "conv2" top: "conv2" }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "pool_ave" top: "sum" eltwise_param { coeff: 0.5 coeff: -1 } }
layer { name: "prod" type: "Eltwise" bottom: "pool_max" bottom: "pool_ave" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
layer { name: "scale" type: "Scale" bottom: "max" top: "scale" scale_param { bias_term: true } }
layer { name: "concat" type: "Concat" bottom: "scale" bottom: "pool_max" top: "concat" }
layer { name: "slice" type: "Slice" bottom: "concat" top: "head" top: "rest" slice_param { slice_point: 5 } }
layer { name: "split" type: "Split" bottom: "rest" top: "kept" top: "dropped" }
layer { name: "silence" type: "Silence" bottom: "dropped" }
layer { name: "up" type: "Deconvolution" bottom: "head" top: "up"
  convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "prob" type: "Softmax" bottom: "crop" top: "prob" }
layer { name: "global" type: "Pooling" bottom: "kept" top: "global" pooling_param { pool: AVE global_pooling: true } }
"""
#: the layer types that fix the input size (InnerProduct over a map) or take labels (loss, accuracy)
FIXED_SIZE_LAYERS = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"
  loss_param { ignore_label: 2 normalization: VALID } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" }
layer { name: "constant" type: "DummyData" top: "constant"
  dummy_data_param { shape { dim: 1 dim: 2 } data_filler { type: "constant" value: 0.25 } } }
"""


def test_every_layer_type_matches_pytorch_at_every_size(tmp_path):
    net = randomize(layer_net(EVERY_LAYER, data=(1, 3, 24, 24)), seed=9)
    assert {layer.layer_type for layer in net.layers.values()} >= {
        "Convolution",
        "ReLU",
        "LRN",
        "Pooling",
        "Dropout",
        "Eltwise",
        "Scale",
        "Concat",
        "Slice",
        "Split",
        "Silence",
        "Deconvolution",
        "Crop",
        "Softmax",
    }
    path = tmp_path / "every_layer.onnx"
    export_onnx(net, path)
    for provider in providers():
        check_parity(net, path, provider, [(2, 19, 23), (1, 24, 24), (1, 33, 17)], seed=4)


#: poolings torch cannot run natively at some sizes (no pad with k < s; pad over half the kernel)
EXPLICIT_POOLING = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "sparse" type: "Pooling" bottom: "conv" top: "sparse" pooling_param { pool: MAX kernel_size: 2 stride: 3 } }
layer { name: "wide" type: "Pooling" bottom: "conv" top: "wide" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 } }
"""


def test_explicit_pooling_exports_for_sizes_where_it_differs_from_the_traced_one(tmp_path):
    # At 24 (conv 22) the k2 s3 pooling's windows are torch's too; at 23 (conv 21) Caffe keeps a
    # last window that starts past the input and torch would drop it: the graph must not fix either.
    net = randomize(layer_net(EXPLICIT_POOLING, data=(1, 3, 24, 24)), seed=2)
    assert not any(layer.native for layer in net.layers.values() if layer.layer_type == "Pooling")
    assert net.inferred_shapes["sparse"][2:] == (8, 8)
    path = tmp_path / "explicit_pooling.onnx"
    export_onnx(net, path)
    for provider in providers():
        check_parity(net, path, provider, [(1, 23, 23), (2, 24, 25), (1, 31, 20)], seed=5)


def test_average_pooling_past_the_input_exports_caffe_pool_size(tmp_path):
    # AVE kernel 1 stride 3, no pad, traced at 7x7 (windows at 0, 3, 6 all inside), run at 5x5 on 1..25:
    # the window at 6 starts past the input, Caffe's pool size there is 5 - 6 = -1 per axis and nothing
    # is summed (0 / -1 = -0; 0 / 1 in the corner); at 6x6 it starts at the input's end: 0 / 0 = NaN.
    net = layer_net(
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        "pooling_param { pool: AVE kernel_size: 1 stride: 3 } }",
        data=(2, 1, 7, 7),
    )
    path = tmp_path / "sparse_average.onnx"
    export_onnx(net, path)
    sess = session(path, "CPUExecutionProvider")
    x = np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    top = sess.run(None, {"data": np.concatenate([x, x])})[0][1, 0]
    expected = np.array([[1, 4, -0.0], [16, 19, -0.0], [-0.0, -0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(np.signbit(top), np.signbit(expected))
    top = sess.run(None, {"data": np.ones((2, 1, 6, 6), dtype=np.float32)})[0][0, 0]
    assert np.isnan(top[2]).all() and np.isnan(top[:, 2]).all() and (top[:2, :2] == 1).all()


def test_fixed_size_and_label_layers_export_with_dynamic_batch(tmp_path):
    net = randomize(layer_net(FIXED_SIZE_LAYERS, data=(2, 3, 14, 14), label=(2,)), seed=10)
    path = tmp_path / "fixed.onnx"
    export_onnx(net, path)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 14, 14]
    sess = session(path, "CPUExecutionProvider")
    rng = np.random.default_rng(5)
    for batch in (1, 3, 4):
        inputs = {
            "data": rng.standard_normal((batch, 3, 14, 14), dtype=np.float32),
            "label": rng.integers(0, 5, batch).astype(np.float32),
        }
        with torch.inference_mode():
            expected = net(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
        for name in net.outputs:
            assert relative_difference(got[name], expected[name].numpy()) < TOLERANCE, f"{name} at batch {batch}"


@pytest.mark.parametrize("model", ["bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet"])
def test_caffe_model_zoo_classifiers_match_pytorch(reference_dir, tmp_path, model):
    definition = read_prototxt(reference_dir / "caffe-models" / model / "deploy.prototxt")
    for layer in definition.layer:
        if layer.type in ("Convolution", "InnerProduct") and layer.name not in ("fc8", "loss3/classifier"):
            parameter = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
            parameter.num_output //= 8
    net = randomize(CaffeNet(definition), seed=11)
    path = tmp_path / f"{model}.onnx"
    export_onnx(net, path)
    node_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "LRN" in node_types
    _, _, height, width = net.input_shapes["data"]
    check_parity(net, path, "CPUExecutionProvider", [(1, height, width), (3, height, width)], seed=6)


def test_cli_exports_caffe_files_and_checkpoints(reduced, tmp_path):
    net, _ = reduced["voc-fcn16s"]
    prototxt, caffemodel = write_net(net, tmp_path)
    from_caffe, from_checkpoint = tmp_path / "caffe.onnx", tmp_path / "checkpoint.onnx"
    assert (
        main(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(from_caffe), "--argmax"]) == 0
    )
    save_checkpoint(net, tmp_path / "net.pt")
    assert main(["--checkpoint", str(tmp_path / "net.pt"), "--out", str(from_checkpoint), "--opset", "18"]) == 0
    check_parity(net, from_caffe, "CPUExecutionProvider", REDUCED_SIZES[:1])
    check_parity(net, from_checkpoint, "CPUExecutionProvider", REDUCED_SIZES[2:])
    assert opset(onnx.load(str(from_checkpoint))) == 18


def test_export_rejects_old_opset(reduced, tmp_path):
    net, _ = reduced["voc-fcn32s"]
    with pytest.raises(ValueError, match="opset 11"):
        export_onnx(net, tmp_path / "old.onnx", opset=11)


def test_cli_reports_a_missing_file_in_one_line(tmp_path):
    missing = tmp_path / "absent.prototxt"
    result = subprocess.run(
        [sys.executable, "-m", "porting.onnx", "--prototxt", str(missing), "--out", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr
