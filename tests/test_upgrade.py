"""Legacy nets upgrade to V2 as Caffe's upgrade_proto does (expected V2 text written by hand)."""

import numpy as np
import pytest
from google.protobuf import text_format

from porting.errors import PrototxtError
from porting.proto import caffe_pb2
from porting.prototxt import parse_prototxt, parse_solver
from porting.upgrade import upgrade_net


def _expected(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def _assert_same(actual: caffe_pb2.NetParameter, expected: caffe_pb2.NetParameter) -> None:
    assert text_format.MessageToString(actual) == text_format.MessageToString(expected)


V1_VGG = """
name: "VGG_ILSVRC_16_layers"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 224
input_dim: 224
layers {
  bottom: "data"
  top: "conv1_1"
  name: "conv1_1"
  type: CONVOLUTION
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param { num_output: 64 pad: 1 kernel_size: 3 }
}
layers { bottom: "conv1_1" top: "conv1_1" name: "relu1_1" type: RELU }
layers {
  bottom: "conv1_1" top: "pool1" name: "pool1" type: POOLING
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  bottom: "pool1" top: "fc6" name: "fc6" type: INNER_PRODUCT
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  inner_product_param { num_output: 4096 }
}
layers { bottom: "fc6" top: "fc6" name: "drop6" type: DROPOUT dropout_param { dropout_ratio: 0.5 } }
layers { bottom: "fc6" top: "prob" name: "prob" type: SOFTMAX }
"""

V2_VGG = """
name: "VGG_ILSVRC_16_layers"
layer {
  name: "input" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } }
}
layer {
  name: "conv1_1" type: "Convolution" bottom: "data" top: "conv1_1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 64 pad: 1 kernel_size: 3 }
}
layer { name: "relu1_1" type: "ReLU" bottom: "conv1_1" top: "conv1_1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1_1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 4096 }
}
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "prob" type: "Softmax" bottom: "fc6" top: "prob" }
"""


def test_v1_vgg_style_net_upgrades_to_v2():
    _assert_same(parse_prototxt(V1_VGG, "vgg.prototxt"), _expected(V2_VGG))


def test_v1_data_transform_param_names_share_mode_loss_weight_and_rules():
    v1 = """
    layers {
      name: "data" type: DATA top: "data" top: "label"
      data_param { source: "train_lmdb" batch_size: 10 scale: 0.5 mean_file: "mean.binaryproto" crop_size: 227 mirror: true }
      include { phase: TRAIN }
    }
    layers {
      name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
      param: "w" param: "b" blob_share_mode: PERMISSIVE blob_share_mode: STRICT
      inner_product_param { num_output: 2 }
    }
    layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" top: "loss" loss_weight: 2
             loss_param { ignore_label: 255 } exclude { stage: "deploy" } }
    """
    expected = """
    layer {
      name: "data" type: "Data" top: "data" top: "label"
      include { phase: TRAIN }
      transform_param { scale: 0.5 mirror: true crop_size: 227 mean_file: "mean.binaryproto" }
      data_param { source: "train_lmdb" batch_size: 10 }
    }
    layer {
      name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
      param { name: "w" share_mode: PERMISSIVE } param { name: "b" share_mode: STRICT }
      inner_product_param { num_output: 2 }
    }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 2
            exclude { stage: "deploy" } loss_param { ignore_label: 255 } }
    """
    _assert_same(parse_prototxt(v1, "v1.prototxt"), _expected(expected))


V0_NET = """
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 10 input_dim: 10
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer {
    name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1 biasterm: false
    weight_filler { type: "gaussian" std: 0.01 }
    blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 } bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10 } bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
"""

V0_AS_V2 = """
name: "v0"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 8 bias_term: false pad: 2 kernel_size: 5 stride: 1
    weight_filler { type: "gaussian" std: 0.01 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
"""


def test_v0_net_with_padding_layer_folds_pad_into_conv():
    _assert_same(parse_prototxt(V0_NET, "v0.prototxt"), _expected(V0_AS_V2))


def test_v0_padding_feeding_a_non_conv_layer_is_rejected_with_layer_name():
    text = """
    input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
    layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
    layers { layer { name: "relu1" type: "relu" } bottom: "pad1" top: "r" }
    """
    with pytest.raises(PrototxtError, match=r"v0\.prototxt: layer 'relu1'.*padding"):
        parse_prototxt(text, "v0.prototxt")


def test_v0_field_meaningless_for_its_type_is_rejected():
    text = 'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "y" }'
    with pytest.raises(PrototxtError, match=r"layer 'r'.*num_output"):
        upgrade_net(text_format.Parse(text, caffe_pb2.NetParameter()), "v0.prototxt")


def test_blobs_of_v0_and_v1_layers_carry_over():
    net = caffe_pb2.NetParameter()
    v1 = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.add(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])
    v0 = net.layers.add(bottom=["x"], top=["y"])
    v0.layer.name, v0.layer.type = "conv", "conv"
    v0.layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2]), data=[7, 8])
    up = upgrade_net(net)
    assert [(layer.name, layer.type) for layer in up.layer] == [("ip", "InnerProduct"), ("conv", "Convolution")]
    assert list(up.layer[0].blobs[0].data) == [1, 2, 3, 4, 5, 6] and up.layer[0].blobs[0].height == 2
    assert list(up.layer[1].blobs[0].data) == [7, 8] and list(up.layer[1].blobs[0].shape.dim) == [2]
    assert not up.layers and np.array_equal(net.layers[0].blobs[0].data, [1, 2, 3, 4, 5, 6])  # input untouched


def test_input_shape_fields_become_input_layer_in_front():
    text = """
    input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 7 }
    input: "im_info" input_shape { dim: 1 dim: 3 }
    layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    """
    expected = """
    layer { name: "input" type: "Input" top: "data" top: "im_info"
            input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } shape { dim: 1 dim: 3 } } }
    layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    """
    _assert_same(parse_prototxt(text), _expected(expected))


def test_wrong_number_of_input_dims_is_rejected():
    with pytest.raises(PrototxtError, match="input_dim"):
        parse_prototxt('input: "data" input_dim: 1 input_dim: 3 input_dim: 224', "x.prototxt")


def test_mixing_layer_and_layers_is_rejected():
    with pytest.raises(PrototxtError, match="mixes"):
        parse_prototxt('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }', "x.prototxt")


def test_solver_type_enum_becomes_type_string():
    solver = parse_solver("base_lr: 0.01 solver_type: ADAGRAD", "s.prototxt")
    assert solver.type == "AdaGrad" and not solver.HasField("solver_type")
    with pytest.raises(PrototxtError, match="s.prototxt.*solver_type"):
        parse_solver('solver_type: NESTEROV type: "Nesterov"', "s.prototxt")
