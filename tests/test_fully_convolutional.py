"""Any ILSVRC classifier into FCN-32s: Caffe's model-zoo nets with random weights written by our
writer, cast by `python -m porting.fully_convolutional`, checked against OpenCV's Caffe importer
on the written files, against the classifier's own InnerProduct outputs, against the authors'
voc-fcn-alexnet files, and against CVPR 2015 Table 1's columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from helpers import opencv_forward, opencv_net, randomize, relative_difference

from eval.published import TABLE1
from porting import CaffeNet, FormatError, load, parse_prototxt, read_caffemodel, read_prototxt, write_caffemodel
from porting.fully_convolutional import cast_classifier
from porting.fully_convolutional import main as cli
from porting.proto import caffe_pb2
from porting.surgery import bilinear_kernel, transplant
from prototxt import fcn
from prototxt.backbone import fcn32s_nets, fully_convolutional, measure

TOL = 1e-4
#: classifier -> (model-zoo folder, --drop, width divisor for the cheap tests)
CLASSIFIERS = {
    "alexnet": ("bvlc_alexnet", (), 16),
    "caffenet": ("bvlc_reference_caffenet", (), 16),
    "googlenet": ("bvlc_googlenet", ("pool5/7x7_s1",), 8),
}


def zoo_net(reference_dir: Path, name: str, divisor: int = 1) -> caffe_pb2.NetParameter:
    """The model zoo's deploy net, every num_output divided by `divisor` (groups still divide)."""
    net = read_prototxt(reference_dir / "caffe-models" / CLASSIFIERS[name][0] / "deploy.prototxt")
    for layer in net.layer:
        param = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
        if layer.type in ("Convolution", "InnerProduct"):
            param.num_output //= divisor
    return net


def random_classifier(tmp_path, reference_dir: Path, name: str, divisor: int, seed: int = 0):
    """The classifier with seeded random weights, written as prototxt + caffemodel by our writer."""
    from porting import to_text

    net = randomize(CaffeNet(zoo_net(reference_dir, name, divisor)), seed=seed)
    prototxt, caffemodel = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    prototxt.write_text(to_text(net.net_param))
    write_caffemodel(net, caffemodel)
    return net, prototxt, caffemodel


def assert_layers_match_opencv(net: CaffeNet, prototxt, caffemodel, x: np.ndarray, label: str) -> None:
    names = [name for name, layer in net.layers.items() if not layer.is_input]
    reference = opencv_forward(opencv_net(prototxt, caffemodel), {"data": x}, names)
    trace = net.trace(torch.from_numpy(x))
    assert trace["score"].shape[2:] == x.shape[2:]
    diffs = {name: relative_difference(trace[name].numpy(), reference[name]) for name in names}
    worst = max(diffs, key=diffs.get)
    print(f"{label}: max relative difference {diffs[worst]:.2e} at {worst} over {len(diffs)} layers")
    assert all(d < TOL for d in diffs.values()), {name: d for name, d in diffs.items() if not d < TOL}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_cast_net_matches_opencv_on_the_written_files(tmp_path, reference_dir, name):
    """The CLI's deploy.prototxt + init.caffemodel, run by us and by OpenCV, layer by layer, at odd
    sizes; then once more with a random score layer, so the upsampling and crop carry values."""
    folder, drop, divisor = CLASSIFIERS[name]
    _, prototxt, caffemodel = random_classifier(tmp_path, reference_dir, name, divisor)
    out = tmp_path / "fcn"
    argv = ["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(out)]
    assert cli(argv + [arg for layer in drop for arg in ("--drop", layer)]) == 0
    assert {path.name for path in out.iterdir()} == {
        "deploy.prototxt",
        "train.prototxt",
        "val.prototxt",
        "init.caffemodel",
    }
    deploy, init = out / "deploy.prototxt", out / "init.caffemodel"
    fcn_net = load(str(deploy), str(init))
    blobs = fcn_net.blobs_numpy()
    assert not blobs["score_fr"][0].any() and not blobs["score_fr"][1].any()
    classes, kernel = blobs["upscore"][0].shape[1], blobs["upscore"][0].shape[2]
    assert np.array_equal(blobs["upscore"][0], bilinear_kernel(classes, kernel))
    rng = np.random.default_rng(1)
    for size in [(45, 67), (101, 77)]:
        x = rng.standard_normal((1, 3, *size), dtype=np.float32) * np.float32(60)
        assert_layers_match_opencv(fcn_net, deploy, init, x, f"{name} init {size}")
    scored = tmp_path / "scored.caffemodel"
    score_blobs = {
        **blobs,
        "score_fr": [rng.standard_normal(b.shape, dtype=np.float32) * 0.05 for b in blobs["score_fr"]],
    }
    write_caffemodel((fcn_net.net_param, score_blobs), scored)
    fcn_net.load_blobs(score_blobs)
    x = rng.standard_normal((1, 3, 59, 83), dtype=np.float32) * np.float32(60)
    assert_layers_match_opencv(fcn_net, deploy, scored, x, f"{name} random score (59, 83)")


def test_full_width_googlenet_matches_opencv(tmp_path, reference_dir):
    """GoogLeNet at full width (6M parameters) through the library function, one odd size."""
    classifier = randomize(CaffeNet(zoo_net(reference_dir, "googlenet")), seed=3)
    result = fully_convolutional(classifier.net_param, classifier.blobs_numpy(), drop=["pool5/7x7_s1"])
    from porting import to_text

    deploy, init = tmp_path / "deploy.prototxt", tmp_path / "init.caffemodel"
    deploy.write_text(to_text(result.nets["deploy"]))
    rng = np.random.default_rng(2)
    blobs = {
        **result.blobs,
        "score_fr": [rng.standard_normal(b.shape, dtype=np.float32) * 0.05 for b in result.blobs["score_fr"]],
    }
    write_caffemodel((result.nets["deploy"], blobs), init)
    x = rng.standard_normal((1, 3, 67, 53), dtype=np.float32) * np.float32(60)
    assert_layers_match_opencv(load(str(deploy), str(init)), deploy, init, x, "googlenet full width (67, 53)")


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_cast_layers_reproduce_the_classifier_at_its_input_size(reference_dir, name):
    """Without the pad, at the classifier's own input size (227 or 224), each cast layer has one
    spatial output equal to the InnerProduct's; a 1000-class score layer given the classifier's
    weights equals the classifier's output."""
    _, drop, divisor = CLASSIFIERS[name]
    classifier = randomize(CaffeNet(zoo_net(reference_dir, name, divisor)), seed=4)
    blobs = classifier.blobs_numpy()
    kept = [] if name == "googlenet" else drop  # GoogLeNet's classifier reads the 7x7 average pooling
    trunk = cast_classifier(classifier.net_param, drop=kept, pad=None)
    final = trunk.classifier
    size = trunk.input_shape[2:]
    assert size == ((227, 227) if name != "googlenet" else (224, 224))
    score = trunk.net.layer.add(name="score_fr", type="Convolution", bottom=[trunk.features], top=["score_fr"])
    score.convolution_param.num_output, score.convolution_param.kernel_size[:] = blobs[final][0].shape[0], [1]
    fcn_net = CaffeNet(trunk.net, input_shapes={"data": (2, 3, *size)})
    transplant(fcn_net, {**blobs, "score_fr": blobs[final]})
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 3, *size), dtype=np.float32) * 50)
    ours, theirs = fcn_net.trace(x), classifier.trace(x)
    expected_cast = {"alexnet": ["fc6", "fc7"], "caffenet": ["fc6", "fc7"], "googlenet": []}[name]
    assert list(trunk.cast) == expected_cast
    for layer, reference in [(layer, layer) for layer in trunk.cast] + [("score_fr", final)]:
        assert ours[layer].shape[2:] == (1, 1), layer
        assert relative_difference(ours[layer][:, :, 0, 0].numpy(), theirs[reference].numpy()) < 1e-5, layer


def _without_defaults(message):
    """Clear fields set to their default (and Caffe's one-element repeated defaults pad 0, stride 1)."""
    for field, value in list(message.ListFields()):
        if field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _without_defaults(item)
        elif (
            not field.is_repeated
            and value == field.default_value
            or field.is_repeated
            and field.name in ("pad", "stride", "dilation")
            and list(value) == [int(field.name != "pad")]
        ):
            message.ClearField(field.name)
    return message


@pytest.mark.parametrize("split", ["train", "val"])
def test_cast_caffenet_is_the_authors_voc_fcn_alexnet(reference_dir, split):
    """The authors' FCN-AlexNet is CaffeNet cast: equal field for field (explicit defaults aside),
    their upsampling kernel 63 and crop offset 18 included, derived here by the coordinate maps."""
    nets, head = fcn32s_nets(cast_classifier(zoo_net(reference_dir, "caffenet")))
    ours = _without_defaults(nets[split])
    ours.ClearField("name")
    theirs = _without_defaults(
        read_prototxt(reference_dir / "fcn-berkeleyvision-extra" / "voc-fcn-alexnet" / f"{split}.prototxt")
    )
    assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)
    assert (head.stride, head.kernel, head.offset) == (32, 63, 18)


@pytest.mark.parametrize("split", ["train", "val", "deploy"])
def test_cast_caffenet_is_the_generated_voc_fcn_alexnet(reference_dir, split):
    """The generic cast and the project's own FCN-AlexNet definition (`prototxt.nets`) agree."""
    from prototxt import nets as published_nets

    ours = _without_defaults(fcn32s_nets(cast_classifier(zoo_net(reference_dir, "caffenet")))[0][split])
    ours.ClearField("name")
    generated = _without_defaults(published_nets.build("voc-fcn-alexnet", split))
    generated.ClearField("name")
    assert text_format.MessageToString(ours) == text_format.MessageToString(generated)


def _rounded_millions(count: int) -> int:
    return math.floor(count / 1e6 + 0.5)


@pytest.mark.parametrize("backbone", ["alexnet", "caffenet", "vgg16", "googlenet"])
def test_measures_equal_table1(request, backbone):
    """Conv layers, parameters (millions, rounded), receptive field and stride computed from the
    nets equal CVPR 2015 Table 1. GoogLeNet's 907 is its field with the final 7x7 average pooling;
    without it (the paper's FCN-GoogLeNet) the field is 6 * 32 pixels smaller."""
    if backbone == "vgg16":
        net = fcn.build("voc-fcn32s", "deploy")
    else:  # the model zoo's definition (VGG16's is our own NetSpec's)
        reference_dir = request.getfixturevalue("reference_dir")
        net = fcn32s_nets(cast_classifier(zoo_net(reference_dir, backbone)), splits=["deploy"])[0]["deploy"]
    row = TABLE1["alexnet" if backbone == "caffenet" else backbone]
    measured = measure(net)
    assert (
        measured.conv_layers,
        _rounded_millions(measured.parameters),
        measured.receptive_field,
        measured.max_stride,
    ) == (row.conv_layers, row.parameters_m, row.receptive_field, row.max_stride)
    if backbone == "googlenet":
        dropped = fcn32s_nets(
            cast_classifier(zoo_net(reference_dir, backbone), drop=["pool5/7x7_s1"]), splits=["deploy"]
        )[0]
        assert measure(dropped["deploy"]).receptive_field == row.receptive_field - 6 * 32


NO_CLASSIFIER = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
"""
IN_THE_WAY = """
layer {{ name: "input" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param {{ num_output: 4 kernel_size: 3 }} }}
{middle}
layer {{ name: "fc6" type: "InnerProduct" bottom: "{bottom}" top: "fc6" inner_product_param {{ num_output: 5 }} }}
{after}
layer {{ name: "fc8" type: "InnerProduct" bottom: "{last}" top: "fc8" inner_product_param {{ num_output: 3 }} }}
"""


@pytest.mark.parametrize(
    "text, says",
    [
        (NO_CLASSIFIER, "no spatial-to-dense boundary to cast: the net has no InnerProduct"),
        (
            IN_THE_WAY.format(
                middle='layer { name: "flat" type: "Flatten" bottom: "conv" top: "flat" }',
                bottom="flat",
                after="",
                last="fc6",
            ),
            "layer 'flat': type 'Flatten' is not supported",
        ),
        (
            IN_THE_WAY.format(
                middle='layer { name: "gp" type: "Pooling" bottom: "conv" top: "gp" '
                "pooling_param { pool: AVE global_pooling: true } }",
                bottom="gp",
                after="",
                last="fc6",
            ),
            "layer 'gp': global pooling collapses any input to 1x1",
        ),
        (
            IN_THE_WAY.format(
                middle="",
                bottom="conv",
                last="norm",
                after='layer { name: "norm" type: "Softmax" bottom: "fc6" top: "norm" }',
            ),
            "layer 'norm': a Softmax layer reads 'fc6', the output of a cast fully connected layer",
        ),
        (
            IN_THE_WAY.format(middle="", bottom="conv", last="fc6", after="").replace(
                'top: "data" input_param', 'top: "data" top: "label" input_param'
            ),
            "needs its deploy form: exactly one Input layer with one top",
        ),
    ],
)
def test_clear_errors(text, says):
    with pytest.raises(FormatError, match="^classifier.prototxt: .*" if "deploy form" in says else None) as info:
        cast_classifier(parse_prototxt(text, "classifier.prototxt"), source="classifier.prototxt")
    assert says in str(info.value) and "classifier.prototxt" in str(info.value)


def test_cli_errors_name_the_problem(tmp_path, reference_dir, capsys):
    _, prototxt, caffemodel = random_classifier(tmp_path, reference_dir, "caffenet", 16)
    (tmp_path / "other").mkdir()
    _, _, other = random_classifier(tmp_path / "other", reference_dir, "caffenet", 8)
    out = str(tmp_path / "out")
    base = ["--prototxt", str(prototxt), "--out", out]
    cases = [
        (base + ["--caffemodel", str(caffemodel), "--drop", "fc9"], "--drop fc9: no such layer"),
        (
            base + ["--caffemodel", str(caffemodel), "--pad", "0"],
            "no crop can align it; pad the first convolution by at least 82 (--pad)",
        ),
        (base + ["--caffemodel", str(other)], "the weights do not fit the classifier: conv1.0"),
    ]
    for argv, says in cases:
        assert cli(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err, err


def test_cli_writes_a_v1_classifier(tmp_path):
    """A legacy V1 classifier file (the demo's VGG16-shaped one) casts like the authors' FCN-32s head."""
    from reproduce.basenet import base_net_text

    text = base_net_text(21, 1 / 16)
    net = randomize(CaffeNet(parse_prototxt(text)), seed=7)
    prototxt, caffemodel = tmp_path / "vgg.prototxt", tmp_path / "vgg.caffemodel"
    prototxt.write_text(text)
    write_caffemodel(net, caffemodel, layout="v1", legacy_dims=True)
    assert cli(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(tmp_path / "o")]) == 0
    written = read_prototxt(tmp_path / "o" / "train.prototxt")
    crop = [layer for layer in written.layer if layer.name == "score"][0]
    upscore = [layer for layer in written.layer if layer.name == "upscore"][0]
    assert (list(crop.crop_param.offset), list(upscore.convolution_param.kernel_size)) == ([19], [64])
    blobs = read_caffemodel(tmp_path / "o" / "init.caffemodel")
    assert np.array_equal(blobs["fc6"][0], net.blobs_numpy()["fc6"][0].reshape(blobs["fc6"][0].shape))
    assert blobs["fc6"][0].shape[2:] == (7, 7)


def test_cli_unwritable_out_is_one_error_line(tmp_path, capsys):
    from reproduce.basenet import base_net_text

    text = base_net_text(21, 1 / 16)
    prototxt, caffemodel = tmp_path / "vgg.prototxt", tmp_path / "vgg.caffemodel"
    prototxt.write_text(text)
    write_caffemodel(randomize(CaffeNet(parse_prototxt(text)), seed=7), caffemodel, layout="v1", legacy_dims=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("outputs cannot go below a plain file")
    assert cli(["--prototxt", str(prototxt), "--caffemodel", str(caffemodel), "--out", str(blocker / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "a-file" in err and "Traceback" not in err, err
