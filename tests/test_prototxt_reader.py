"""Net and solver text: the authors' files read, bad text is located, bad nets are named."""

import pytest
from fetch_reference import listed

from porting.errors import FormatError, PrototxtError
from porting.netstate import filter_phase
from porting.prototxt import parse_prototxt, read_prototxt, read_solver, to_text, validate

NETS = [name for name in listed("fcn-berkeleyvision/voc-fcn*/*.prototxt") if not name.endswith("/solver.prototxt")]
SOLVERS = listed("fcn-berkeleyvision/voc-fcn*/solver.prototxt")


def test_reference_set_is_complete(reference_dir):
    names = {name.removeprefix("fcn-berkeleyvision/") for name in NETS}
    for net in ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce"):
        assert {f"{net}/train.prototxt", f"{net}/val.prototxt"} <= names
    assert "voc-fcn8s/deploy.prototxt" in names and len(SOLVERS) == 4
    assert all((reference_dir / name).is_file() for name in NETS + SOLVERS)


@pytest.mark.parametrize("name", NETS, ids=lambda name: name.removeprefix("fcn-berkeleyvision/"))
def test_reference_nets_read_and_validate_in_both_phases(reference_dir, name):
    path = reference_dir / name
    net = read_prototxt(path)
    text = path.read_text()
    assert len(net.layer) == text.count("\nlayer {") + text.startswith("layer {")
    for phase in ("TRAIN", "TEST"):
        validate(net, phase, source=str(path))
    assert net.layer[-1].name == ("loss" if "deploy" not in path.name else "score")
    assert parse_prototxt(to_text(net)) == net


@pytest.mark.parametrize("name", SOLVERS, ids=lambda name: name.split("/")[1])
def test_reference_solvers_read(reference_dir, name):
    path = reference_dir / name
    solver = read_solver(path)
    stated = next(line for line in path.read_text().splitlines() if line.startswith("base_lr:"))
    assert solver.base_lr == pytest.approx(float(stated.split(":")[1]), rel=1e-6)
    assert solver.type == "SGD" and solver.momentum == pytest.approx(0.99)
    assert solver.train_net == "train.prototxt" and list(solver.test_net) == ["val.prototxt"]


def test_to_text_is_caffe_style():
    net = parse_prototxt('layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 } } }')
    assert to_text(net) == (
        'layer {\n  name: "input"\n  type: "Input"\n  top: "data"\n'
        "  input_param {\n    shape {\n      dim: 1\n    }\n  }\n}\n"
    )


@pytest.mark.parametrize(
    "text, where, says",
    [
        ('layer {\n  name: "a"\n  nme: "b"\n}', "3:3", 'no field named "nme"'),
        ('layer {\n  name: "a"\n  name: "b"\n}', "3:9", 'multiple "name"'),
        ('layer {\n  name: "a"\n', "2:9", 'Expected "}"'),
        ("layer {\n  type: CONVOLUTION\n}", "2:9", "legacy 'layers"),
        ("layer {\n  convolution_param { num_output: -3 }\n}", "2:35", "out of range: -3"),
    ],
)
def test_broken_text_is_located_by_line_and_column(text, where, says):
    with pytest.raises(PrototxtError) as caught:
        parse_prototxt(text, "net.prototxt")
    assert caught.value.where == f"net.prototxt:{where}"
    assert says in str(caught.value)
    assert "caffe." not in str(caught.value) and "Traceback" not in str(caught.value)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.prototxt"
    with pytest.raises(PrototxtError, match="nope.prototxt: cannot read"):
        read_prototxt(missing)
    with pytest.raises(FormatError, match="nope.prototxt"):
        read_solver(missing)


def test_non_utf8_bytes_are_located(tmp_path):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes('name: "net"\nlayer { name: "caf\xe9" }\n'.encode("latin-1"))
    with pytest.raises(PrototxtError, match=r"latin1\.prototxt:2:19: not UTF-8 text: byte 0xe9"):
        read_prototxt(path)


INPUT = 'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'


@pytest.mark.parametrize(
    "body, layer, says",
    [
        ('layer { name: "r" type: "ReLU" bottom: "missing" top: "r" }', "r", "bottom 'missing' is not produced"),
        (
            'layer { name: "a" type: "ReLU" bottom: "b" top: "a" }\n'
            'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }',
            "a",
            "bottom 'b' is not produced",
        ),
        (
            'layer { name: "r1" type: "ReLU" bottom: "data" top: "x" }\n'
            'layer { name: "r2" type: "Sigmoid" bottom: "data" top: "x" }',
            "r2",
            "top 'x' is already produced by layer 'r1'",
        ),
        (
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 16777217 kernel_size: 3 } }",
            "c",
            "num_output 16777217",
        ),
        (
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 8 kernel_size: 65537 } }",
            "c",
            "kernel size 65537",
        ),
        (
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 2 stride: 0 } }',
            "p",
            "stride 0",
        ),
        (
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            "inner_product_param { num_output: 99999999 } }",
            "fc",
            "num_output 99999999",
        ),
    ],
)
def test_invalid_nets_are_rejected_with_the_layer_named(body, layer, says):
    with pytest.raises(PrototxtError) as caught:
        parse_prototxt(INPUT + body, "bad.prototxt")
    assert caught.value.where == f"bad.prototxt: layer '{layer}'"
    assert says in str(caught.value)


@pytest.mark.parametrize(
    "shape, says",
    [("dim: 1 dim: 0 dim: 4", "dimension <= 0"), ("dim: 65536 dim: 65536", "more than 2147483648")],
)
def test_absurd_input_shapes_are_rejected(shape, says):
    text = f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}'
    with pytest.raises(PrototxtError, match=f"layer 'in'.*{says}"):
        parse_prototxt(text, "big.prototxt")


def test_in_place_layers_are_allowed():
    net = parse_prototxt(
        INPUT + 'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n'
        'layer { name: "drop" type: "Dropout" bottom: "data" top: "data" }'
    )
    assert [layer.name for layer in net.layer] == ["input", "relu", "drop"]


PHASED = """
state { stage: "weak" }
layer { name: "train_data" type: "Input" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "test_data" type: "Input" top: "data" top: "label" include { phase: TEST } }
layer { name: "score" type: "ReLU" bottom: "data" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" include { phase: TEST min_level: 1 } }
layer { name: "strong" type: "ReLU" bottom: "score" top: "s2" include { stage: "strong" } }
layer { name: "weak" type: "ReLU" bottom: "score" top: "s3" include { not_stage: "strong" stage: "weak" } }
layer { name: "train_only_use" type: "ReLU" bottom: "loss" top: "l2" include { phase: TRAIN max_level: 0 } }
"""


@pytest.mark.parametrize(
    "phase, level, stages, kept",
    [
        ("TRAIN", None, None, ["train_data", "score", "loss", "weak", "train_only_use"]),
        ("TEST", None, None, ["test_data", "score", "loss", "weak"]),
        ("TEST", 1, [], ["test_data", "score", "loss", "acc"]),
        ("TRAIN", 2, ["deploy", "strong"], ["train_data", "score", "strong"]),
    ],
)
def test_filter_phase_follows_caffe_state_rules(phase, level, stages, kept):
    net = parse_prototxt(PHASED)
    filtered = filter_phase(net, phase, level=level, stages=stages)
    assert [layer.name for layer in filtered.layer] == kept
    assert filtered.state.phase == (0 if phase == "TRAIN" else 1)
    assert len(net.layer) == 8  # the input net is not changed


def test_validation_depends_on_the_phase():
    text = """
    layer { name: "data" type: "Input" top: "data" }
    layer { name: "label" type: "Input" top: "label" include { phase: TRAIN } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "label" top: "loss" }
    """
    net = parse_prototxt(text, "n.prototxt")  # valid in TRAIN, so it reads
    validate(net, "TRAIN")
    with pytest.raises(PrototxtError, match=r"n.prototxt: layer 'loss'.*bottom 'label'.*TEST"):
        parse_prototxt(text, "n.prototxt", phase="TEST")


def test_include_and_exclude_together_are_rejected():
    text = (
        INPUT
        + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" include { phase: TRAIN } exclude { phase: TEST } }'
    )
    with pytest.raises(PrototxtError, match="layer 'r'.*either include or exclude"):
        parse_prototxt(text, "x.prototxt")
