"""Upgrade legacy Caffe nets (V0, V1, `input:` fields) to the V2 `layer { type: "..." }` form.

Caffe itself upgrades every net it reads (upgrade_proto.cpp), so old files such as the
ILSVRC VGG16 definition run unchanged; this module applies the same rules so the rest of
the port only ever sees V2 layers. The input message is never modified.
"""

from __future__ import annotations

from porting.errors import PrototxtError
from porting.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

#: V1 layer type enum -> V2 type string (Caffe's UpgradeV1LayerType).
V1_TO_V2_TYPE: dict[int, str] = {
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DATA: "Data",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

#: V2 type string -> V1 enum, for writing V1-layout caffemodels.
V2_TO_V1_TYPE: dict[str, int] = {name: enum for enum, name in V1_TO_V2_TYPE.items()}

#: V0 type string -> V1 enum (Caffe's UpgradeV0LayerType).
V0_TO_V1_TYPE: dict[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V0 field -> {V0 layer type: (V1 sub-message, field in it)}; a V0 field used with any other
# type has no meaning in Caffe, which drops it with an error message (we refuse instead).
_V0_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output"), "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"), "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {
        "conv": ("convolution_param", "weight_filler"),
        "innerproduct": ("inner_product_param", "weight_filler"),
    },
    "bias_filler": {
        "conv": ("convolution_param", "bias_filler"),
        "innerproduct": ("inner_product_param", "bias_filler"),
    },
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {
        "data": ("data_param", "source"),
        "hdf5_data": ("hdf5_data_param", "source"),
        "images": ("image_data_param", "source"),
        "window_data": ("window_data_param", "source"),
        "infogain_loss": ("infogain_loss_param", "source"),
    },
    "batchsize": {
        "data": ("data_param", "batch_size"),
        "hdf5_data": ("hdf5_data_param", "batch_size"),
        "images": ("image_data_param", "batch_size"),
        "window_data": ("window_data_param", "batch_size"),
    },
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "")},
}
# V0 data-transformation fields go to transform_param whatever the layer type, as in Caffe.
_V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}
_V0_HANDLED = {"name", "type", "blobs", "blobs_lr", "weight_decay"}

# V1 data layers whose own scale/mean_file/crop_size/mirror moved to transform_param.
_V1_DATA_PARAMS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# V1 fields with their own upgrade rule; every other set V1 field is a `*_param` copied as is.
_V1_SPECIAL = {
    "bottom",
    "top",
    "name",
    "include",
    "exclude",
    "type",
    "blobs",
    "param",
    "blob_share_mode",
    "blobs_lr",
    "weight_decay",
    "loss_weight",
    "layer",
}

_SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


def upgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> caffe_pb2.NetParameter:
    """Return a V2 copy of `net`: V0 -> V1 -> V2 layers, then `input` fields -> an `Input` layer."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if out.layers:
        if out.layer:
            raise PrototxtError(source, "the net mixes V2 'layer { }' and legacy 'layers { }' blocks; use one form")
        v1_layers = _upgrade_v0_layers(out, source)
        del out.layers[:]
        for v1 in v1_layers:
            _move_data_transform(v1)
            _v1_to_v2(v1, out.layer.add(), source)
    _upgrade_input(out, source)
    _upgrade_batch_norm(out)
    return out


def upgrade_solver(solver: caffe_pb2.SolverParameter, source: str = "<solver>") -> caffe_pb2.SolverParameter:
    """Return a copy with the deprecated `solver_type` enum turned into `type`, nets upgraded."""
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    if out.HasField("solver_type"):
        if out.HasField("type"):
            raise PrototxtError(source, "both the deprecated 'solver_type' and 'type' are given; keep only 'type'")
        out.type = _SOLVER_TYPES[out.solver_type]
        out.ClearField("solver_type")
    if out.HasField("net_param"):
        out.net_param.CopyFrom(upgrade_net(out.net_param, f"{source}: net_param"))
    if out.HasField("train_net_param"):
        out.train_net_param.CopyFrom(upgrade_net(out.train_net_param, f"{source}: train_net_param"))
    for i, test_net in enumerate(out.test_net_param):
        test_net.CopyFrom(upgrade_net(test_net, f"{source}: test_net_param[{i}]"))
    return out


def downgrade_layer(layer: caffe_pb2.LayerParameter) -> caffe_pb2.V1LayerParameter | None:
    """The V1 form of a V2 layer (enum type, `blobs_lr`/`weight_decay` from its ParamSpecs), or None when
    its type has no V1 form; the inverse of Caffe's V1 -> V2 upgrade."""
    if layer.type not in V2_TO_V1_TYPE:
        return None
    out = caffe_pb2.V1LayerParameter(name=layer.name, type=V2_TO_V1_TYPE[layer.type])
    out.bottom.extend(layer.bottom)
    out.top.extend(layer.top)
    out.include.extend(layer.include)
    out.exclude.extend(layer.exclude)
    out.loss_weight.extend(layer.loss_weight)
    for spec_field, v1_field in (
        ("name", "param"),
        ("share_mode", "blob_share_mode"),
        ("lr_mult", "blobs_lr"),
        ("decay_mult", "weight_decay"),
    ):
        if any(spec.HasField(spec_field) for spec in layer.param):
            getattr(out, v1_field).extend(getattr(spec, spec_field) for spec in layer.param)
    v1_fields = caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name
    for descriptor, value in layer.ListFields():
        if descriptor.name.endswith("_param") and descriptor.name in v1_fields:
            getattr(out, descriptor.name).CopyFrom(value)
    return out


def downgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> caffe_pb2.NetParameter:
    """A V2 net in the V1 format of the pre-2015 files (`layers { type: CONVOLUTION }`, `input`/`input_dim`).

    Args:
        net: the V2 net; its Input layers become `input`/`input_dim` fields.
        source: names the net in errors.

    Returns:
        The V1 net; `upgrade_net` turns it back into `net`'s layers.

    Raises:
        PrototxtError: a layer type V1 cannot express.
    """
    out = caffe_pb2.NetParameter(name=net.name)
    for layer in net.layer:
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            for index, top in enumerate(layer.top):
                out.input.append(top)
                out.input_dim.extend(shapes[0 if len(shapes) == 1 else index].dim)
            continue
        v1 = downgrade_layer(layer)
        if v1 is None:
            raise PrototxtError(_where(source, layer.name), f"type '{layer.type}' has no V1 form")
        out.layers.append(v1)
    return out


def v2_type(v1_type: int, where: str) -> str:
    """V2 type string of a V1 enum value; PrototxtError for NONE or an unknown value."""
    try:
        return V1_TO_V2_TYPE[v1_type]
    except KeyError:
        raise PrototxtError(where, f"unknown V1 layer type {v1_type}") from None


def _where(source: str, name: str) -> str:
    return f"{source}: layer '{name}'"


def _upgrade_v0_layers(net: caffe_pb2.NetParameter, source: str) -> list[caffe_pb2.V1LayerParameter]:
    """V0 layers -> V1 layers; a V0 "padding" layer is folded into the conv/pool that reads it."""
    producer: dict[str, int] = {}  # blob -> index in net.layers of its last producer
    upgraded: list[caffe_pb2.V1LayerParameter] = []
    for i, layer in enumerate(net.layers):
        v0 = layer.layer
        is_v0 = layer.HasField("layer")
        if not (is_v0 and v0.type == "padding"):
            upgraded.append(_v0_to_v1(layer, source) if is_v0 else _copy(layer))
        for j, bottom in enumerate(layer.bottom):
            src_index = producer.get(bottom)
            if src_index is None:
                continue
            src = net.layers[src_index]
            if not (src.HasField("layer") and src.layer.type == "padding"):
                continue
            name = v0.name or layer.name
            if not is_v0 or v0.type not in ("conv", "pool"):
                raise PrototxtError(_where(source, name), "a V0 padding layer can only feed a 'conv' or 'pool' layer")
            if len(layer.bottom) != 1 or len(src.bottom) != 1 or len(src.top) != 1:
                raise PrototxtError(_where(source, name), "a V0 padding layer and its reader must have one input each")
            target = upgraded[-1]
            target.bottom[j] = src.bottom[0]
            sub = target.convolution_param if v0.type == "conv" else target.pooling_param
            if v0.type == "conv":
                del sub.pad[:]
                sub.pad.append(src.layer.pad)
            else:
                sub.pad = src.layer.pad
        for top in layer.top:
            producer[top] = i
    return upgraded


def _v0_to_v1(layer: caffe_pb2.V1LayerParameter, source: str) -> caffe_pb2.V1LayerParameter:
    v0 = layer.layer
    where = _where(source, v0.name or layer.name)
    out = caffe_pb2.V1LayerParameter()
    out.bottom.extend(layer.bottom)
    out.top.extend(layer.top)
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_TO_V1_TYPE:
            raise PrototxtError(where, f"unknown V0 layer type '{v0.type}'")
        out.type = V0_TO_V1_TYPE[v0.type]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        name = field.name
        if name in _V0_HANDLED:
            continue
        if name in _V0_TRANSFORM_FIELDS:
            setattr(out.transform_param, _V0_TRANSFORM_FIELDS[name], value)
            continue
        targets = _V0_FIELDS.get(name, {})
        if v0.type not in targets:
            raise PrototxtError(where, f"V0 field '{name}' has no meaning for layer type '{v0.type}'")
        sub_name, sub_field = targets[v0.type]
        sub = getattr(out, sub_name)
        if not sub_field:
            sub.CopyFrom(value)
            continue
        descriptor = sub.DESCRIPTOR.fields_by_name[sub_field]
        if descriptor.is_repeated:
            getattr(sub, sub_field).append(value)
        elif descriptor.message_type is not None:
            getattr(sub, sub_field).CopyFrom(value)
        else:
            setattr(sub, sub_field, value)
    return out


def _move_data_transform(v1: caffe_pb2.V1LayerParameter) -> None:
    """Caffe moved data layers' scale/mean_file/crop_size/mirror into transform_param."""
    if v1.type not in _V1_DATA_PARAMS or not v1.HasField(_V1_DATA_PARAMS[v1.type]):
        return
    params = getattr(v1, _V1_DATA_PARAMS[v1.type])
    for field in _TRANSFORM_FIELDS:
        if params.HasField(field):
            setattr(v1.transform_param, field, getattr(params, field))
            params.ClearField(field)


def _v1_to_v2(v1: caffe_pb2.V1LayerParameter, out: caffe_pb2.LayerParameter, source: str) -> None:
    where = _where(source, v1.name)
    if v1.HasField("name"):
        out.name = v1.name
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = v2_type(v1.type, where)
    out.blobs.extend(v1.blobs)
    for values, attr in (
        (v1.param, "name"),
        (v1.blob_share_mode, "share_mode"),
        (v1.blobs_lr, "lr_mult"),
        (v1.weight_decay, "decay_mult"),
    ):
        for i, value in enumerate(values):
            while len(out.param) <= i:
                out.param.add()
            setattr(out.param[i], attr, value)
    out.loss_weight.extend(v1.loss_weight)
    for field, value in v1.ListFields():
        if field.name not in _V1_SPECIAL:
            getattr(out, field.name).CopyFrom(value)


def _upgrade_input(net: caffe_pb2.NetParameter, source: str) -> None:
    """`input:` + `input_dim:`/`input_shape:` -> a first layer named "input" of type Input.

    Caffe drops bare `input:` fields without shapes (a legacy caffemodel case); we keep them
    as an Input layer without shapes, whose tops then take the shape of what the caller feeds.
    """
    inputs = list(net.input)
    if not inputs and not net.input_dim and not net.input_shape:
        return
    if net.input_shape and len(net.input_shape) != len(inputs):
        raise PrototxtError(source, f"{len(inputs)} 'input' names but {len(net.input_shape)} 'input_shape' entries")
    if net.input_dim and len(net.input_dim) != 4 * len(inputs):
        raise PrototxtError(
            source, f"{len(inputs)} 'input' names need {4 * len(inputs)} 'input_dim' values, found {len(net.input_dim)}"
        )
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=inputs)
    if net.input_shape:
        layer.input_param.shape.extend(net.input_shape)
    elif net.input_dim:
        dims = list(net.input_dim)
        for i in range(len(inputs)):
            layer.input_param.shape.add(dim=dims[4 * i : 4 * i + 4])
    layers = [layer, *net.layer]
    del net.layer[:]
    net.layer.extend(layers)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)


def _upgrade_batch_norm(net: caffe_pb2.NetParameter) -> None:
    """Old BatchNorm definitions froze their 3 statistics blobs with param specs; Caffe drops them."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            del layer.param[:]


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out
