"""Caffemodel reading and writing, checked against protobuf's own encoder/decoder and OpenCV."""

import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from porting.caffemodel import iter_caffemodel, read_caffemodel, write_caffemodel
from porting.errors import CaffemodelError
from porting.proto import caffe_pb2
from porting.prototxt import parse_prototxt

RNG = np.random.default_rng(7)


def _arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _save(tmp_path, net: caffe_pb2.NetParameter, name="m.caffemodel"):
    path = tmp_path / name
    path.write_bytes(net.SerializeToString())
    return path


def test_reads_v2_layers_encoded_by_protobuf(tmp_path):
    w, b = _arr(4, 3, 2, 2), _arr(4)
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="in", type="Input", top=["data"])
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.convolution_param.num_output = 4
    conv.blobs.add(shape=caffe_pb2.BlobShape(dim=w.shape), data=w.ravel())
    conv.blobs.add(shape=caffe_pb2.BlobShape(dim=b.shape), data=b.ravel())
    layers = list(iter_caffemodel(_save(tmp_path, net)))
    assert [(layer.name, layer.type, len(layer.blobs)) for layer in layers] == [
        ("in", "Input", 0),
        ("conv", "Convolution", 2),
    ]
    got = layers[1].blobs
    assert got[0].dtype == np.float32 and np.array_equal(got[0], w) and np.array_equal(got[1], b)


def test_reads_v1_layers_with_legacy_dims_and_double_data(tmp_path):
    w, b = _arr(1, 1, 3, 5), RNG.standard_normal(3)
    net = caffe_pb2.NetParameter()
    ip = net.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["x"], top=["fc"])
    ip.blobs_lr.extend([1, 2])
    ip.blobs.add(num=1, channels=1, height=3, width=5, data=w.ravel())
    ip.blobs.add(num=1, channels=1, height=1, width=3, double_data=b)
    got = read_caffemodel(_save(tmp_path, net))
    assert [a.shape for a in got["fc"]] == [(1, 1, 3, 5), (1, 1, 1, 3)]
    assert np.array_equal(got["fc"][0], w)
    assert got["fc"][1].dtype == np.float32 and np.array_equal(got["fc"][1].ravel(), b.astype(np.float32))
    assert next(iter_caffemodel(tmp_path / "m.caffemodel")).type == "InnerProduct"


def test_reads_v0_layers_nested_in_v1(tmp_path):
    w = _arr(2, 1, 3, 3)
    net = caffe_pb2.NetParameter()
    pad = net.layers.add(bottom=["data"], top=["pad1"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 1
    conv = net.layers.add(bottom=["pad1"], top=["conv1"])
    conv.layer.name, conv.layer.type = "conv1", "conv"
    conv.layer.blobs.add(num=2, channels=1, height=3, width=3, data=w.ravel())
    layers = list(iter_caffemodel(_save(tmp_path, net)))
    assert [(layer.name, layer.type) for layer in layers] == [("conv1", "Convolution")]
    assert np.array_equal(layers[0].blobs[0], w)


def test_reads_unpacked_floats(tmp_path):
    values = _arr(7)
    body = b"".join(b"\x2d" + struct.pack("<f", v) for v in values)  # field 5, wire type 5, one by one
    shape = b"\x0a\x01\x07"  # BlobShape { dim: 7 }
    blob = b"\x3a" + bytes([len(shape)]) + shape + body
    layer = b"\x0a\x01a" + b"\x3a" + bytes([len(blob)]) + blob  # name "a", blobs
    path = tmp_path / "unpacked.caffemodel"
    path.write_bytes(b"\xa2\x06" + bytes([len(layer)]) + layer)  # field 100
    assert np.array_equal(read_caffemodel(path)["a"][0], values)


NET_TEXT = """
name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
"""


def _tiny_blobs():
    return {"conv": [_arr(4, 3, 3, 3), _arr(4)], "fc": [_arr(5, 4 * 4 * 5), _arr(5)]}


def _reference_forward(x, blobs):
    """Hand computation: 3x3 conv (pad 1), 2x2/2 max pool with Caffe's ceil rounding, inner product."""
    w, b = blobs["conv"]
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(1, 2))  # C, H, W, 3, 3
    conv = np.einsum("chwij,ocij->ohw", windows, w) + b[:, None, None]
    pooled = np.empty((4, 4, 5), np.float32)  # ceil((8-2)/2)+1 = 4, ceil((9-2)/2)+1 = 5
    for i in range(4):
        for j in range(5):
            pooled[:, i, j] = conv[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
    fw, fb = blobs["fc"]
    return fw @ pooled.ravel() + fb


@pytest.mark.parametrize("layout, legacy", [("v2", False), ("v2", True), ("v1", False), ("v1", True)])
def test_opencv_reads_our_files(tmp_path, layout, legacy):
    net, blobs = parse_prototxt(NET_TEXT), _tiny_blobs()
    (tmp_path / "net.prototxt").write_text(NET_TEXT)
    model = tmp_path / "net.caffemodel"
    write_caffemodel((net, blobs), model, layout=layout, legacy_dims=legacy)
    x = RNG.standard_normal((1, 3, 8, 9)).astype(np.float32)
    cv_net = cv2.dnn.readNetFromCaffe(str(tmp_path / "net.prototxt"), str(model))
    cv_net.setInput(x)
    out = cv_net.forward("fc").ravel()
    np.testing.assert_allclose(out, _reference_forward(x, blobs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_protobuf_decodes_what_we_write(tmp_path, layout):
    net, blobs = parse_prototxt(NET_TEXT), _tiny_blobs()
    path = tmp_path / "w.caffemodel"
    write_caffemodel(SimpleNamespace(net_param=net, blobs_numpy=lambda: blobs), path, layout=layout)
    decoded = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert decoded.name == "tiny"
    if layout == "v2":
        assert [layer.name for layer in decoded.layer] == ["input", "conv", "pool", "fc"]
        conv = decoded.layer[1]
        assert conv.type == "Convolution" and [p.lr_mult for p in conv.param] == [1, 2]
        assert list(conv.blobs[0].shape.dim) == [4, 3, 3, 3]
    else:
        assert [layer.name for layer in decoded.layers] == ["conv", "pool", "fc"]  # Input has no V1 form
        conv = decoded.layers[0]
        assert conv.type == caffe_pb2.V1LayerParameter.CONVOLUTION and list(conv.blobs_lr) == [1, 2]
        assert list(conv.weight_decay) == [1, 0] and conv.convolution_param.num_output == 4
    assert np.array_equal(np.array(conv.blobs[0].data, np.float32), blobs["conv"][0].ravel())
    assert np.array_equal(np.array(conv.blobs[1].data, np.float32), blobs["conv"][1])


@pytest.mark.parametrize("legacy", [False, True])
def test_round_trip(tmp_path, legacy):
    net, blobs = parse_prototxt(NET_TEXT), _tiny_blobs()
    blobs["fc"][1] = blobs["fc"][1].astype(np.float64)  # converted on writing
    path = tmp_path / "r.caffemodel"
    write_caffemodel((net, blobs), path, layout="v1", legacy_dims=legacy)
    got = read_caffemodel(path)
    assert set(got) == {"conv", "pool", "fc"} and got["pool"] == []
    for name in ("conv", "fc"):
        for mine, back in zip(blobs[name], got[name]):
            expected_shape = (1,) * (4 - mine.ndim) + mine.shape if legacy else mine.shape
            assert back.shape == expected_shape and np.array_equal(back.ravel(), mine.ravel().astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["r.caffemodel"]  # no temp file left


def test_writer_refuses_blobs_for_unknown_layers_and_leaves_nothing(tmp_path):
    path = tmp_path / "x.caffemodel"
    with pytest.raises(CaffemodelError, match="not in the net: ghost"):
        write_caffemodel((parse_prototxt(NET_TEXT), {"ghost": [_arr(2)]}), path)
    assert not list(tmp_path.iterdir())


def _blob_file(tmp_path, data, dims):
    net = caffe_pb2.NetParameter()
    net.layer.add(name="L").blobs.add(shape=caffe_pb2.BlobShape(dim=dims), data=data)
    return _save(tmp_path, net), net.SerializeToString()


def test_shape_payload_mismatch_names_layer_and_offset(tmp_path):
    path, raw = _blob_file(tmp_path, [1, 2, 3, 4, 5], [2, 3])
    with pytest.raises(CaffemodelError, match=r"layer 'L' blob 0: shape \(2, 3\) holds 6 values but the payload has 5"):
        read_caffemodel(path)
    legacy = caffe_pb2.NetParameter()
    legacy.layers.add(name="V").blobs.add(num=2, channels=2, height=1, width=1, data=[1, 2, 3])
    with pytest.raises(CaffemodelError, match=r"blob 0: shape \(2, 2, 1, 1\) holds 4") as caught:
        read_caffemodel(_save(tmp_path, legacy, "legacy.caffemodel"))
    assert caught.value.offset is not None and 0 < caught.value.offset < len(legacy.SerializeToString())


def test_truncated_payload_is_reported_with_offset(tmp_path):
    path, raw = _blob_file(tmp_path, np.arange(1000, dtype=np.float32), [1000])
    path.write_bytes(raw[:2500])
    with pytest.raises(CaffemodelError, match="runs past the end of the file") as caught:
        read_caffemodel(path)
    assert caught.value.offset == 2 and "(byte 2)" in str(caught.value)  # the length after the layer's 2-byte tag


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"", "no layers found"),
        (b"\x0b\x00", "unsupported wire type 3"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x08" + b"\xff" * 9 + b"\x02", "overflows 64 bits"),
        (b"\x08\xff\xff", "truncated varint"),
        (b"\xa2\x06\x05\x0a\x09abc\x08\x01", "runs past the end of the enclosing message"),
        (b"\xa0\x06\x01", "field 'layer' is varint"),
        (b"\xa2\x06\x03\x3a\x01\x2a", "truncated"),
    ],
)
def test_malformed_wire_data(tmp_path, raw, says):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(raw)
    with pytest.raises(CaffemodelError, match=says) as caught:
        read_caffemodel(path)
    assert caught.value.offset is not None


def test_missing_file_is_a_caffemodel_error(tmp_path):
    with pytest.raises(CaffemodelError, match="cannot open"):
        read_caffemodel(tmp_path / "none.caffemodel")


def test_garbage_gives_caffemodel_error_or_valid_layers(tmp_path):
    """Random bytes, truncations and corruptions of a real file: never another exception or a hang."""
    net = caffe_pb2.NetParameter()
    layer = net.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    layer.blobs.add(num=1, channels=1, height=2, width=3, data=np.arange(6, dtype=np.float32))
    layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2]), double_data=[1.5, 2.5])
    good = net.SerializeToString()
    rng = np.random.default_rng(0)
    samples = [rng.bytes(int(n)) for n in rng.integers(1, 400, size=300)]
    samples += [good[:cut] for cut in range(len(good))]
    for _ in range(300):
        corrupt = bytearray(good)
        corrupt[int(rng.integers(len(good)))] = int(rng.integers(256))
        samples.append(bytes(corrupt))
    path = tmp_path / "fuzz.caffemodel"
    for sample in samples:
        path.write_bytes(sample)
        try:
            for layer in read_caffemodel(path).values():
                assert all(a.dtype == np.float32 and a.nbytes <= len(sample) for a in layer)
        except CaffemodelError as error:
            assert error.offset is not None or "no layers" in str(error)
