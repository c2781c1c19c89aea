"""The generated nets and solvers against the authors' files, field by field: all 15 nets
they publish (the VOC VGG16 nets, FCN-AlexNet, PASCAL-Context, NYUDv2, SIFT Flow).

The one documented difference: the authors' voc-fcn16s and pascalcontext files give the
Python data layer's dataset paths two levels up (`../../data/...`), their other nets one
level up (`../data/...`, our default for every net). Everything else must match exactly.
"""

import ast
from pathlib import PurePosixPath

import pytest
import torch
from fetch_reference import listed
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from porting.proto import caffe_pb2
from porting.prototxt import read_prototxt, read_solver
from prototxt import fcn, generate, nets, solvers

NETS_WITH_OTHER_PATHS = {"voc-fcn16s", "pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s"}
PATH_KEYS = {"sbdd_dir", "voc_dir", "context_dir"}


def differences(ours: Message, theirs: Message, where: str = "") -> list[str]:
    """Every field where two messages differ, as "layer 'x' field a.b: ours=..., theirs=..."."""
    found = []
    set_ours = {field.name: (field, value) for field, value in ours.ListFields()}
    set_theirs = {field.name: (field, value) for field, value in theirs.ListFields()}
    for name in sorted(set_ours.keys() | set_theirs.keys(), key=lambda n: ours.DESCRIPTOR.fields_by_name[n].number):
        path = f"{where}.{name}" if where else name
        if name not in set_ours or name not in set_theirs:
            mine = set_ours.get(name, (None, "<unset>"))[1]
            other = set_theirs.get(name, (None, "<unset>"))[1]
            found.append(f"field {path}: ours={_show(mine)}, theirs={_show(other)}")
            continue
        field, mine = set_ours[name]
        other = set_theirs[name][1]
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            if (list(mine) if field.is_repeated else mine) != (list(other) if field.is_repeated else other):
                found.append(f"field {path}: ours={_show(mine)}, theirs={_show(other)}")
        elif not field.is_repeated:
            found += differences(mine, other, path)
        else:
            if len(mine) != len(other):
                found.append(f"field {path}: ours has {len(mine)}, theirs {len(other)}")
            for index, (a, b) in enumerate(zip(mine, other)):
                if path == "layer":
                    found += [f"layer '{b.name}' {d}" for d in differences(a, b)]
                else:
                    found += differences(a, b, f"{path}[{index}]")
    return found


def _show(value) -> str:
    if isinstance(value, Message):
        return "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    if hasattr(value, "__len__") and not isinstance(value, str):
        return repr(list(value))
    return repr(value)


def _path_only(difference: str, ours: caffe_pb2.NetParameter, theirs: caffe_pb2.NetParameter) -> bool:
    """Whether a difference is the documented one: data-layer param_str paths."""
    if "python_param.param_str" not in difference:
        return False
    mine = ast.literal_eval(ours.layer[0].python_param.param_str)
    other = ast.literal_eval(theirs.layer[0].python_param.param_str)
    differing = {key for key in mine.keys() | other.keys() if mine.get(key) != other.get(key)}
    return differing <= PATH_KEYS


#: net -> its folder inside the reference root (fcn-berkeleyvision/ or fcn-berkeleyvision-extra/)
REFERENCE_DIRS = {
    path.parent.name: path.parent for path in map(PurePosixPath, listed("fcn-berkeleyvision*/*/solver.prototxt"))
}
REFERENCE_NETS = sorted(
    (path.parent.name, path.stem)
    for path in map(PurePosixPath, listed("fcn-berkeleyvision*/*/*.prototxt"))
    if path.stem in (*fcn.SPLITS, *fcn.DATA_SPLITS)
)


def test_every_reference_net_is_covered():
    assert set(REFERENCE_DIRS) == set(nets.NETS)
    assert len(nets.NETS) == 15
    # two splits per net, and the one deploy file they publish (voc-fcn8s)
    assert len(REFERENCE_NETS) == 2 * 15 + 1


@pytest.mark.parametrize("net,split", REFERENCE_NETS)
def test_generated_net_equals_the_authors(reference_dir, net, split):
    theirs = read_prototxt(reference_dir / REFERENCE_DIRS[net] / f"{split}.prototxt")
    ours = read_prototxt(generate.PACKAGE_DIR / net / f"{split}.prototxt")
    found = differences(ours, theirs)
    for difference in found:
        print(f"{net}/{split}: {difference}")
    remaining = [d for d in found if not _path_only(d, ours, theirs)]
    assert remaining == []
    assert bool(found) == (net in NETS_WITH_OTHER_PATHS), "the documented path difference changed"


@pytest.mark.parametrize("net", nets.NETS)
def test_reference_solver_equals_the_authors(reference_dir, net):
    theirs = read_solver(reference_dir / REFERENCE_DIRS[net] / "solver.prototxt")
    ours = read_solver(generate.PACKAGE_DIR / net / "solver.prototxt")
    found = differences(ours, theirs)
    for difference in found:
        print(f"{net}/solver: {difference}")
    assert found == []
    assert solvers.build("heavy", net) == ours


def test_differences_are_reported_by_layer_and_field(reference_dir):
    theirs = read_prototxt(reference_dir / REFERENCE_DIRS["voc-fcn8s"] / "val.prototxt")
    ours = fcn.build("voc-fcn8s", "val", num_classes=60)
    found = differences(ours, theirs)
    assert "layer 'score_pool3' field convolution_param.num_output: ours=60, theirs=21" in found
    assert len(found) == 6  # score_fr, upscore2, score_pool4, upscore_pool4, score_pool3, upscore8


def test_committed_files_are_fresh():
    outdated = generate.stale(generate.PACKAGE_DIR, generate.render())
    assert outdated == [], f"run `python -m prototxt.generate`; stale: {outdated}"


def test_check_flags_a_stale_file(tmp_path, capsys):
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "voc-fcn8s" / "deploy.prototxt"
    edited.write_text(edited.read_text().replace("offset: 31", "offset: 32"))
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "voc-fcn8s/deploy.prototxt" in capsys.readouterr().err


def test_cvpr_recipe():
    expected_lr = {"voc-fcn32s": 1e-4, "voc-fcn16s": 1e-6, "voc-fcn8s": 1e-8}
    for net, lr in expected_lr.items():
        solver = read_solver(generate.PACKAGE_DIR / net / "solver_cvpr.prototxt")
        assert solver.base_lr == pytest.approx(lr, rel=1e-6)
        assert (solver.momentum, solver.iter_size, solver.train_net) == (pytest.approx(0.9), 20, "train_cvpr.prototxt")
        assert solver.weight_decay == pytest.approx(5e-4)
        # the paper's Caffe summed the 20 gradients; today's averages: lr x 20, decay / 20
        mean = read_solver(generate.PACKAGE_DIR / net / "solver_cvpr_mean.prototxt")
        assert (mean.base_lr, mean.weight_decay) == (pytest.approx(20 * lr, rel=1e-6), pytest.approx(2.5e-5))
        assert (mean.momentum, mean.iter_size, mean.train_net) == (pytest.approx(0.9), 20, "train_cvpr.prototxt")
        assert "41cf06c" in (generate.PACKAGE_DIR / net / "solver_cvpr.prototxt").read_text()
        train = read_prototxt(generate.PACKAGE_DIR / net / "train_cvpr.prototxt")
        by_name = {layer.name: layer for layer in train.layer}
        assert by_name["loss"].loss_param.normalize is True
        deconvs = [layer for layer in train.layer if layer.type == "Deconvolution"]
        assert [layer.param[0].lr_mult for layer in deconvs] == [1] * (len(deconvs) - 1) + [0]
    with pytest.raises(ValueError, match="no 'voc-fcn8s-atonce'"):
        solvers.build("cvpr", "voc-fcn8s-atonce")


@pytest.mark.parametrize("num_classes", [60, 33])
@pytest.mark.parametrize("net", fcn.NETS)
def test_class_count_reaches_every_score_layer_and_keeps_offsets(net, num_classes):
    default = fcn.build(net, "train")
    variant = fcn.build(net, "train", num_classes=num_classes)
    for before, after in zip(default.layer, variant.layer):
        if before.convolution_param.num_output == 21:
            assert after.convolution_param.num_output == num_classes, after.name
            after.convolution_param.num_output = 21
        assert before == after


def test_width_and_input_channels():
    deploy = fcn.build("voc-fcn8s", "deploy", in_channels=4, width=0.25)
    by_name = {layer.name: layer for layer in deploy.layer}
    assert list(by_name["input"].input_param.shape[0].dim) == [1, 4, 500, 500]
    assert by_name["conv1_1"].convolution_param.num_output == 16
    assert by_name["fc7"].convolution_param.num_output == 1024
    assert by_name["score_fr"].convolution_param.num_output == 21
    with pytest.raises(ValueError, match="mean has 3 entries but in_channels is 4"):
        fcn.build("voc-fcn8s", "train", in_channels=4)
    train = fcn.build("voc-fcn8s", "train", in_channels=4, data_params={"split": "train", "mean": (1, 2, 3, 4)})
    assert ast.literal_eval(train.layer[0].python_param.param_str)["mean"] == (1, 2, 3, 4)


def test_skip_layers_are_a_parameter():
    net = fcn.define("deploy", skips=("pool4", "pool3", "pool2")).to_proto()
    crops = {layer.name: list(layer.crop_param.offset) for layer in net.layer if layer.type == "Crop"}
    assert set(crops) == {"score_pool4c", "score_pool3c", "score_pool2c", "score"}
    assert crops["score_pool4c"] == [5] and crops["score_pool3c"] == [9]
    with pytest.raises(ValueError, match="coarsest first"):
        fcn.define("deploy", skips=("pool3", "pool4"))


@pytest.mark.parametrize(
    "net,options,size",
    [
        ("voc-fcn32s", dict(num_classes=60), (37, 53)),
        ("voc-fcn16s", dict(num_classes=33, in_channels=4), (45, 29)),
        ("voc-fcn8s", dict(num_classes=21), (31, 67)),
        ("voc-fcn8s-atonce", dict(num_classes=33), (1, 41)),
    ],
)
def test_nets_load_in_porting_and_keep_the_input_size(net, options, size):
    from porting import CaffeNet

    deploy = fcn.build(net, "deploy", width=1 / 16, **options)
    model = CaffeNet(deploy, phase="TEST")
    x = torch.randn(1, options.get("in_channels", 3), *size)
    with torch.no_grad():
        score = model(x)["score"]
    assert tuple(score.shape) == (1, options["num_classes"], *size)


def test_val_net_with_color_and_depth_runs_to_a_loss():
    from porting import CaffeNet

    params = {**fcn.DATA_PARAMS["val"], "mean": (104.0, 117.0, 123.0, 0.0)}
    val = fcn.build("voc-fcn8s", "val", num_classes=60, in_channels=4, width=1 / 16, data_params=params)
    size = (1, 4, 33, 47)
    model = CaffeNet(val, phase="TEST", input_shapes={"data": size, "label": (1, 1, *size[2:])})
    label = torch.randint(0, 60, (1, 1, *size[2:])).float()
    with torch.no_grad():
        out = model(data=torch.randn(size), label=label)
    assert out["loss"].numel() == 1 and torch.isfinite(out["loss"]).all()


@pytest.mark.parametrize(
    "net,losses",
    [("nyud-fcn32s-color-d", ["loss"]), ("nyud-fcn32s-color-hha", ["loss"]), ("siftflow-fcn8s", ["loss", "loss_geo"])],
)
def test_training_nets_with_several_inputs_or_labels_run_to_their_losses(net, losses):
    """The data layer's tops (color + depth, color + hha; sem + geo labels) are the net's
    named inputs; every head's loss comes out, finite."""
    from porting import CaffeNet

    train = nets.build(net, nets.info(net).splits[0], width=1 / 16)
    channels = {"color": 3, "depth": 1, "hha": 3, "data": 3}
    size = (45, 39)
    data_tops = list(train.layer[0].top)
    shapes = {top: (1, channels.get(top, 1), *size) for top in data_tops}
    model = CaffeNet(train, phase="TRAIN", input_shapes=shapes)
    assert model.inputs == data_tops
    feed = {
        top: torch.randn(shape) if top in channels else torch.randint(0, 3, shape).float()
        for top, shape in shapes.items()
    }
    out = model(**feed)
    assert sorted(name for name in out if name.startswith("loss")) == losses
    assert all(torch.isfinite(out[name]).all() for name in losses)


def test_alexnet_and_vgg_crop_offsets_come_from_the_coordinate_maps():
    offsets = {
        net: [list(layer.crop_param.offset) for layer in nets.build(net, "deploy").layer if layer.name == "score"][0]
        for net in ("voc-fcn-alexnet", "voc-fcn32s")
    }
    # hand-computed: AlexNet's input-side offset 32*0 + 13 (conv1..fc6) and its upsampling's -31 give 18; VGG16's 19
    assert offsets == {"voc-fcn-alexnet": [18], "voc-fcn32s": [19]}
    narrow = nets.build("voc-fcn-alexnet", "deploy", width=1 / 16)
    assert [layer.convolution_param.num_output for layer in narrow.layer if layer.type == "Convolution"][:5] == [
        6,
        16,
        24,
        24,
        16,
    ]
