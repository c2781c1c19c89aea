"""A catalog of bad inputs and the message each one actually gets.

Every entry builds one broken input (a prototxt, a caffemodel, a checkpoint, a dataset
folder, a stage run), feeds it to the product's public entry point and records the
exception type and message as raised, so `docs/bad-inputs.md` shows real output, never
hand-written text:

    python -m tests.error_catalog --write    # regenerate docs/bad-inputs.md
    python -m tests.error_catalog --check    # exit 1 if the doc is stale or an entry escapes FcnError

The runner caps its address space (RLIMIT_AS) so an input that makes the product
allocate absurdly fails with MemoryError instead of taking the machine down.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

import porting
from porting.errors import FcnError
from porting.proto import caffe_pb2
from porting.wire import key, varint_bytes

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
MEMORY_HEADROOM = 3 * 2**30
TMP = "<tmp>"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")

#: A small V2 net with the FCN ingredients (conv, in-place ReLU, pool, deconv, crop); every
#: fuzz and catalog input starts from it or from the authors' nets.
TINY_NET = """name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore"
  convolution_param { num_output: 3 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "upscore" bottom: "data" top: "out" crop_param { axis: 2 offset: 1 } }
"""


@dataclass(frozen=True)
class Entry:
    """One bad input: `what` describes it for the table, `run` builds it under a folder and feeds it in."""

    what: str
    run: Callable[[Path], object]


@dataclass(frozen=True)
class Outcome:
    what: str
    error: str  # exception class name, or "" when the input was accepted
    message: str
    in_family: bool


ENTRIES: list[Entry] = []


def entry(what: str) -> Callable[[Callable[[Path], object]], Callable[[Path], object]]:
    def register(run: Callable[[Path], object]) -> Callable[[Path], object]:
        ENTRIES.append(Entry(what, run))
        return run

    return register


# ---------------------------------------------------------------- building blocks


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_files(folder: Path, text: str = TINY_NET, layout: str = "v2") -> tuple[Path, Path]:
    """The tiny net's prototxt and a caffemodel of it written by `porting.write_caffemodel`."""
    torch.manual_seed(0)
    net = porting.CaffeNet(porting.parse_prototxt(text, source="tiny"))
    prototxt = write_text(folder, "tiny.prototxt", text)
    caffemodel = folder / "tiny.caffemodel"
    porting.write_caffemodel(net, caffemodel, layout=layout)
    return prototxt, caffemodel


def blob_message(shape: tuple[int, ...], payload: bytes) -> bytes:
    """A BlobProto with `shape` and a packed float payload, encoded by hand."""
    dims = b"".join(varint_bytes(d) for d in shape)
    shape_field = key(1, 2) + varint_bytes(len(dims)) + dims
    return key(7, 2) + varint_bytes(len(shape_field)) + shape_field + key(5, 2) + varint_bytes(len(payload)) + payload


def layer_message(name: str, blob: bytes) -> bytes:
    """A V2 NetParameter holding one Convolution layer whose only blob is `blob`."""
    head = caffe_pb2.LayerParameter(name=name, type="Convolution").SerializeToString()
    body = head + key(7, 2) + varint_bytes(len(blob)) + blob
    return key(100, 2) + varint_bytes(len(body)) + body


def replace_line(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def voc_folder(folder: Path, images: dict[str, tuple[bytes | None, np.ndarray | None]]) -> Path:
    """A VOCdevkit/VOC2012 tree whose val list holds `images` (id -> (JPEG bytes or None, label or None))."""
    root = folder / "VOCdevkit"
    year = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (year / sub).mkdir(parents=True)
    for image_id, (jpeg, label) in images.items():
        if jpeg is not None:
            (year / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
        if label is not None:
            png = Image.fromarray(label, mode="P")
            png.putpalette([0] * 768)
            png.save(year / "SegmentationClass" / f"{image_id}.png")
    (year / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in images))
    return root


def jpeg(height: int = 8, width: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def voc_val(root: Path):
    from fcndata import VOCSegmentation

    dataset = VOCSegmentation(root, "2012", "val")
    return [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------- prototxt


@entry("prototxt syntax error (a `}` missing)")
def _syntax(folder: Path):
    return porting.read_prototxt(
        write_text(
            folder, "net.prototxt", TINY_NET.replace('} } }\nlayer { name: "relu1"', '} }\nlayer { name: "relu1"')
        )
    )


@entry("unknown field (`kernel_sise`)")
def _unknown_field(folder: Path):
    return porting.read_prototxt(
        write_text(folder, "net.prototxt", TINY_NET.replace("num_output: 4 kernel_size", "num_output: 4 kernel_sise"))
    )


@entry("non-repeated field given twice")
def _field_twice(folder: Path):
    return porting.read_prototxt(
        write_text(folder, "net.prototxt", TINY_NET.replace("num_output: 4", "num_output: 4 num_output: 8"))
    )


@entry("V1 enum type inside a V2 `layer { }`")
def _v1_type(folder: Path):
    return porting.read_prototxt(write_text(folder, "net.prototxt", TINY_NET.replace('type: "ReLU"', "type: RELU")))


@entry("prototxt that is not UTF-8 text")
def _not_utf8(folder: Path):
    path = folder / "net.prototxt"
    path.write_bytes(TINY_NET.encode() + b"# \xff\xfe\n")
    return porting.read_prototxt(path)


@entry("prototxt file missing")
def _missing_prototxt(folder: Path):
    return porting.load(folder / "absent.prototxt")


@entry("unknown layer type (`Frobnicate`)")
def _unknown_type(folder: Path):
    return porting.load(write_text(folder, "net.prototxt", TINY_NET.replace('type: "ReLU"', 'type: "Frobnicate"')))


@entry("bottom produced by no layer")
def _missing_bottom(folder: Path):
    return porting.read_prototxt(
        write_text(folder, "net.prototxt", TINY_NET.replace('bottom: "pool1"', 'bottom: "pool2"'))
    )


@entry("top produced twice (not in place)")
def _duplicate_top(folder: Path):
    text = TINY_NET.replace('bottom: "pool1" top: "score"', 'bottom: "pool1" top: "conv1"')
    return porting.read_prototxt(write_text(folder, "net.prototxt", text.replace('bottom: "score"', 'bottom: "conv1"')))


@entry("cycle (`score` reads `upscore`, which reads `score`)")
def _cycle(folder: Path):
    return porting.read_prototxt(
        write_text(
            folder, "net.prototxt", TINY_NET.replace('bottom: "pool1" top: "score"', 'bottom: "upscore" top: "score"')
        )
    )


@entry("absurd size (`num_output: 1000000000`)")
def _absurd_num_output(folder: Path):
    return porting.read_prototxt(
        write_text(folder, "net.prototxt", TINY_NET.replace("num_output: 4", "num_output: 1000000000"))
    )


@entry("absurd input shape (1 x 3 x 10^6 x 10^6)")
def _absurd_input(folder: Path):
    return porting.read_prototxt(
        write_text(folder, "net.prototxt", TINY_NET.replace("dim: 16 dim: 16", "dim: 1000000 dim: 1000000"))
    )


@entry("huge weights within the per-field limits (`num_output: 16777216` after 4096 channels)")
def _huge_weights(folder: Path):
    text = TINY_NET.replace("num_output: 4 kernel_size: 3", "num_output: 4096 kernel_size: 3")
    text = text.replace("num_output: 3 kernel_size: 1", "num_output: 16777216 kernel_size: 3")
    return porting.load(write_text(folder, "net.prototxt", text))


@entry("kernel larger than its input")
def _kernel_too_big(folder: Path):
    return porting.load(
        write_text(
            folder,
            "net.prototxt",
            TINY_NET.replace("pool: MAX kernel_size: 2", "pool: MAX kernel_size: 64").replace(
                "kernel_size: 1 weight", "kernel_size: 64 weight"
            ),
        )
    )


@entry("Crop whose offset runs past the reference")
def _crop_offset(folder: Path):
    return porting.load(write_text(folder, "net.prototxt", TINY_NET.replace("offset: 1", "offset: 40")))


@entry("both include and exclude rules on one layer")
def _include_exclude(folder: Path):
    return porting.read_prototxt(
        write_text(
            folder,
            "net.prototxt",
            TINY_NET.replace(
                'name: "relu1" type: "ReLU"',
                'name: "relu1" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN }',
            ),
        )
    )


@entry("Python layer whose `param_str` is code (`__import__('os').system(...)`)")
def _param_str_code(folder: Path):
    text = TINY_NET.replace(
        'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }',
        'layer { name: "data" type: "Python" top: "data" python_param { module: "evil" layer: "Layer" '
        "param_str: \"__import__('os').system('true')\" } }",
    )
    return porting.load(write_text(folder, "net.prototxt", text))


@entry("input tensor with the wrong number of channels")
def _wrong_channels(folder: Path):
    net = porting.load(write_text(folder, "net.prototxt", TINY_NET))
    return net(torch.zeros(1, 5, 16, 16))


@entry("prototxt with no layers (an empty file)")
def _no_layers(folder: Path):
    return porting.load(write_text(folder, "empty.prototxt", "# nothing here\n"))


@entry("solver prototxt with an unknown field")
def _solver_field(folder: Path):
    return porting.read_solver(
        write_text(folder, "solver.prototxt", 'net: "train.prototxt"\nbase_lr: 1e-10\nlr_polcy: "fixed"\n')
    )


# ---------------------------------------------------------------- caffemodel


@entry("caffemodel file missing")
def _missing_caffemodel(folder: Path):
    prototxt, _ = tiny_files(folder)
    return porting.load(prototxt, folder / "absent.caffemodel")


@entry("caffemodel of another net: none of its layer names is the net's")
def _weights_of_another_net(folder: Path):
    other = TINY_NET.replace('"conv1"', '"conv1_1"').replace('"score"', '"score_fr"').replace('"upscore"', '"up"')
    _, caffemodel = tiny_files(folder, other)
    prototxt = write_text(folder, "net.prototxt", TINY_NET)
    return porting.load(prototxt, caffemodel)


@entry("caffemodel truncated inside a blob")
def _truncated(folder: Path):
    _, caffemodel = tiny_files(folder)
    data = caffemodel.read_bytes()
    caffemodel.write_bytes(data[: len(data) * 2 // 3])
    return porting.read_caffemodel(caffemodel)


@entry("empty caffemodel (0 bytes)")
def _empty(folder: Path):
    path = folder / "empty.caffemodel"
    path.write_bytes(b"")
    return porting.read_caffemodel(path)


@entry("random bytes as a caffemodel")
def _random_bytes(folder: Path):
    path = folder / "random.caffemodel"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return porting.read_caffemodel(path)


@entry("a prototxt passed as the caffemodel")
def _text_as_caffemodel(folder: Path):
    prototxt, _ = tiny_files(folder)
    return porting.load(prototxt, prototxt)


@entry("blob dims disagree with the payload (shape 4x3x3x3, 100 floats)")
def _dims_payload(folder: Path):
    path = folder / "bad.caffemodel"
    path.write_bytes(layer_message("conv1", blob_message((4, 3, 3, 3), np.zeros(100, "<f4").tobytes())))
    return porting.read_caffemodel(path)


@entry("blob claims 2^40 floats; the file holds 16 bytes of them")
def _past_eof(folder: Path):
    path = folder / "bad.caffemodel"
    dims = b"".join(varint_bytes(d) for d in (2**20, 2**20))
    shape = key(1, 2) + varint_bytes(len(dims)) + dims
    blob = key(7, 2) + varint_bytes(len(shape)) + shape + key(5, 2) + varint_bytes(4 * 2**40) + bytes(16)
    path.write_bytes(layer_message("conv1", blob))
    return porting.read_caffemodel(path)


@entry("layer length prefix past the end of the file")
def _layer_past_eof(folder: Path):
    path = folder / "bad.caffemodel"
    path.write_bytes(key(100, 2) + varint_bytes(2**31) + b"\x0a\x05conv1")
    return porting.read_caffemodel(path)


@entry("weights of another net (shape mismatch against the prototxt)")
def _shape_mismatch(folder: Path):
    prototxt, _ = tiny_files(folder)
    other = TINY_NET.replace("num_output: 4", "num_output: 6")
    torch.manual_seed(0)
    net = porting.CaffeNet(porting.parse_prototxt(other, source="other"))
    porting.write_caffemodel(net, folder / "other.caffemodel")
    return porting.load(prototxt, folder / "other.caffemodel")


@entry("weights with a missing bias blob (1 blob where the layer has 2)")
def _blob_count(folder: Path):
    prototxt, _ = tiny_files(folder)
    path = folder / "bad.caffemodel"
    path.write_bytes(layer_message("conv1", blob_message((4, 3, 3, 3), np.zeros(108, "<f4").tobytes())))
    return porting.load(prototxt, path)


# ---------------------------------------------------------------- checkpoints


@entry("checkpoint that is not a converted net (a plain `torch.save` dict)")
def _wrong_checkpoint(folder: Path):
    path = folder / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return porting.load(path)


@entry("checkpoint whose pickle would run code")
def _pickled_code(folder: Path):
    path = folder / "model.pt"
    torch.save({"format": "fcn-faithfully/1", "payload": _RunsCode()}, path)
    return porting.load(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@entry("checkpoint truncated (zip cut in half)")
def _truncated_checkpoint(folder: Path):
    path = folder / "model.pt"
    porting.save_checkpoint(porting.CaffeNet(porting.parse_prototxt(TINY_NET, source="tiny")), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return porting.load(path)


@entry("checkpoint whose stored weights do not fit its net")
def _checkpoint_weights(folder: Path):
    from porting.checkpoint import FORMAT

    path = folder / "model.pt"
    torch.save(
        {"format": FORMAT, "net_text": TINY_NET, "phase": "TEST", "state_dict": {"conv1.0": torch.zeros(1)}}, path
    )
    return porting.load(path)


@entry("safetensors checkpoint truncated (cut in half)")
def _truncated_safetensors(folder: Path):
    path = folder / "model.safetensors"
    porting.save_checkpoint(porting.CaffeNet(porting.parse_prototxt(TINY_NET, source="tiny")), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return porting.load(path)


@entry("safetensors file that is not a converted net (plain `safetensors.torch.save_file`)")
def _foreign_safetensors(folder: Path):
    from safetensors.torch import save_file

    path = folder / "model.safetensors"
    save_file({"weight": torch.zeros(3)}, path)
    return porting.load(path)


@entry("training snapshot cut short")
def _truncated_snapshot(folder: Path):
    from reproduce.snapshot import load_snapshot

    path = folder / "snapshot_iter_10.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("snapshot/data.pkl", b"\x80\x02}q\x00(X")
    return load_snapshot(path, torch.nn.Linear(1, 1), None)


@entry("training snapshot with the right format tag but no weights")
def _snapshot_without_weights(folder: Path):
    from reproduce.snapshot import FORMAT, VERSION, load_snapshot

    path = folder / "snapshot_iter_10.pt"
    torch.save({"format": FORMAT, "version": VERSION, "trainer": {}}, path)
    return load_snapshot(path, torch.nn.Linear(1, 1), None)


# ---------------------------------------------------------------- datasets


@entry("dataset root missing")
def _missing_root(folder: Path):
    from fcndata import VOCSegmentation

    return VOCSegmentation(folder / "VOCdevkit", "2012", "val")


@entry("image listed in the split but missing")
def _missing_image(folder: Path):
    return voc_val(voc_folder(folder, {"2008_000001": (None, np.zeros((8, 8), np.uint8))}))


@entry("corrupt JPEG (truncated to 40 bytes)")
def _corrupt_jpeg(folder: Path):
    return voc_val(voc_folder(folder, {"2008_000001": (jpeg()[:40], np.zeros((8, 8), np.uint8))}))


@entry("label values outside 0..20 and 255")
def _bad_labels(folder: Path):
    return voc_val(voc_folder(folder, {"2008_000001": (jpeg(), np.full((8, 8), 42, np.uint8))}))


@entry("label size differs from the image size")
def _label_size(folder: Path):
    return voc_val(voc_folder(folder, {"2008_000001": (jpeg(), np.zeros((6, 8), np.uint8))}))


@entry("id list with a repeated id")
def _repeated_id(folder: Path):
    from fcndata import load_ids

    return load_ids(write_text(folder, "ids.txt", "2008_000001\n2008_000002\n2008_000001\n"))


@entry("PASCAL-Context: annotations folder missing")
def _context_root(folder: Path):
    from fcndata.pascalcontext import PASCALContextSegmentation
    from fcndata.synthetic_families import write_pascalcontext

    paths = write_pascalcontext(folder, n_train=1, n_val=1)
    return PASCALContextSegmentation(paths.voc_root, folder / "context")


@entry("PASCAL-Context: LabelMap value that is no id of labels.txt")
def _context_label_id(folder: Path):
    import scipy.io

    from fcndata.pascalcontext import PASCALContextSegmentation
    from fcndata.synthetic_families import write_pascalcontext

    paths = write_pascalcontext(folder, n_train=1, n_val=1)
    scipy.io.savemat(paths.context_root / "trainval" / "2009_0000.mat", {"LabelMap": np.full((8, 8), 9999)})
    return PASCALContextSegmentation(paths.voc_root, paths.context_root)[0]


@entry("NYUDv2: corrupt segmentation .mat (truncated)")
def _nyud_corrupt_mat(folder: Path):
    from fcndata.nyud import NYUDSegmentation
    from fcndata.synthetic_families import write_nyud

    root = write_nyud(folder, n_train=1, n_val=1, n_test=1)
    path = next((root / "segmentation").glob("*.mat"))
    path.write_bytes(path.read_bytes()[:100])
    return [NYUDSegmentation(root, split)[0] for split in ("train", "val", "test")]


@entry("NYUDv2: segmentation values outside 0..40")
def _nyud_label_values(folder: Path):
    import scipy.io

    from fcndata.nyud import NYUDSegmentation
    from fcndata.synthetic_families import write_nyud

    root = write_nyud(folder, n_train=1, n_val=1, n_test=1)
    scipy.io.savemat(root / "segmentation" / "img_5002.mat", {"segmentation": np.full((8, 8), 41, np.uint8)})
    return NYUDSegmentation(root, "test")[0]


@entry("NYUDv2: HHA size differs from the colour image")
def _nyud_size(folder: Path):
    from fcndata.nyud import NYUDSegmentation
    from fcndata.synthetic_families import write_nyud

    root = write_nyud(folder, n_train=1, n_val=1, n_test=1)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "data" / "hha" / "img_5002.png")
    return NYUDSegmentation(root, "test", tops=("color", "hha", "label"))[0]


@entry("NYUDv2: depth map with zeros (log undefined)")
def _nyud_depth(folder: Path):
    from fcndata.nyud import NYUDSegmentation
    from fcndata.synthetic_families import write_nyud

    root = write_nyud(folder, n_train=1, n_val=1, n_test=1)
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(root / "data" / "depth" / "img_5002.png")
    return NYUDSegmentation(root, "test", tops=("color", "depth", "label"))[0]


@entry("SIFT Flow: label .mat without the variable S")
def _siftflow_variable(folder: Path):
    import scipy.io

    from fcndata.siftflow import SUBFOLDER, SIFTFlowSegmentation
    from fcndata.synthetic_families import write_siftflow

    root = write_siftflow(folder, n_trainval=1, n_test=1)
    scipy.io.savemat(root / "SemanticLabels" / SUBFOLDER / "test_0000.mat", {"labels": np.ones((8, 8))})
    return SIFTFlowSegmentation(root, "test")[0]


@entry("SIFT Flow: geometric labels outside -1..3")
def _siftflow_geo(folder: Path):
    import scipy.io

    from fcndata.siftflow import SUBFOLDER, SIFTFlowSegmentation
    from fcndata.synthetic_families import write_siftflow

    root = write_siftflow(folder, n_trainval=1, n_test=1)
    scipy.io.savemat(root / "GeoLabels" / SUBFOLDER / "test_0000.mat", {"S": np.full((8, 8), 7)})
    return SIFTFlowSegmentation(root, "test")[0]


def _open_all(spec: str, split: str):
    from fcndata import parse_dataset

    dataset = parse_dataset(spec).open(split)
    return [dataset[i] for i in range(len(dataset))]


def _folder_dataset(folder: Path) -> Path:
    from fcndata.synthetic import write_synthetic_folder

    return write_synthetic_folder(folder / "mine", n_train=1, n_val=1, size=(16, 24))


@entry("`--dataset` without a kind (`mydata` for `folder:mydata`)")
def _dataset_no_kind(folder: Path):
    from fcndata import parse_dataset

    return parse_dataset("mydata")


@entry("`--dataset` of an unknown kind")
def _dataset_unknown_kind(folder: Path):
    from fcndata import parse_dataset

    return parse_dataset(f"cityscapes:{folder}")


@entry("`folder:` dataset without classes.txt")
def _folder_no_classes(folder: Path):
    root = _folder_dataset(folder)
    (root / "classes.txt").unlink()
    return _open_all(f"folder:{root}", "val")


@entry("`folder:` dataset without the split asked for")
def _folder_no_split(folder: Path):
    return _open_all(f"folder:{_folder_dataset(folder)}", "test")


@entry("`folder:` label saved as a colour (RGB) PNG")
def _folder_rgb_label(folder: Path):
    root = _folder_dataset(folder)
    label = root / "labels" / "val" / "val_0000.png"
    Image.open(label).convert("RGB").save(label)
    return _open_all(f"folder:{root}", "val")


@entry("`folder:` label with a class index past classes.txt")
def _folder_label_range(folder: Path):
    root = _folder_dataset(folder)
    label = root / "labels" / "val" / "val_0000.png"
    Image.fromarray(np.maximum(np.asarray(Image.open(label)), 7)).save(label)
    return _open_all(f"folder:{root}", "val")


@entry("`ade20k:` given the folder above ADEChallengeData2016")
def _ade20k_parent(folder: Path):
    from fcndata.synthetic import write_synthetic_ade20k

    write_synthetic_ade20k(folder / "ADEChallengeData2016", n_train=1, n_val=1, size=(16, 24))
    return _open_all(f"ade20k:{folder}", "validation")


@entry("`ade20k:` folder without objectInfo150.txt")
def _ade20k_no_info(folder: Path):
    from fcndata.synthetic import write_synthetic_ade20k

    root = write_synthetic_ade20k(folder / "ADEChallengeData2016", n_train=1, n_val=1, size=(16, 24))
    (root / "objectInfo150.txt").unlink()
    return _open_all(f"ade20k:{root}", "validation")


@entry("`ade20k:` annotation value above 150")
def _ade20k_value(folder: Path):
    from fcndata.synthetic import write_synthetic_ade20k

    root = write_synthetic_ade20k(folder / "ADEChallengeData2016", n_train=1, n_val=1, size=(16, 24))
    label = root / "annotations" / "validation" / "ADE_val_00000001.png"
    Image.fromarray(np.maximum(np.asarray(Image.open(label)), 200)).save(label)
    return _open_all(f"ade20k:{root}", "validation")


# ---------------------------------------------------------------- published models


@entry("`--model` with its caffemodel missing")
def _model_weights_missing(folder: Path):
    from porting import models

    with mock.patch.dict(os.environ, {models.MODELS_DIR_VARIABLE: str(folder / "cache")}):
        return models.load_model("voc-fcn8s", folder / "fcn8s-heavy-pascal.caffemodel")


@entry("`--model` without `--caffemodel`, its weights not in the model cache")
def _model_not_cached(folder: Path):
    from porting import models

    with mock.patch.dict(os.environ, {models.MODELS_DIR_VARIABLE: str(folder / "cache")}):
        return models.get("voc-fcn8s").weights()


@entry("model cache that cannot be written (`download`, `--download`)")
def _model_cache_unwritable(folder: Path):
    from porting import models

    (folder / "a-file").write_text("not a folder")
    with mock.patch.dict(os.environ, {models.MODELS_DIR_VARIABLE: str(folder / "a-file" / "models")}):
        return models.get("voc-fcn8s").download(progress=False)


@entry("`--model` name unknown")
def _model_unknown(folder: Path):
    from porting import models

    return models.get("voc-fcn4s")


# ---------------------------------------------------------------- images given to a model's transform


@entry("float image in 0..1 (torchvision's `ToTensor`) given to `net.transform`")
def _float_image(folder: Path):
    from porting.transform import CaffeTransform

    return CaffeTransform((104.0, 117.0, 123.0))(torch.linspace(0, 1, 48).reshape(3, 4, 4))


@entry("image tensor whose layout is ambiguous (3 x H x 3) given to `net.transform`")
def _ambiguous_image(folder: Path):
    from porting.transform import CaffeTransform

    return CaffeTransform((104.0, 117.0, 123.0))(torch.zeros(3, 8, 3, dtype=torch.uint8))


# ---------------------------------------------------------------- training stages


@entry("stage started without its base weights (`fcn16s` before `fcn32s`)")
def _missing_base(folder: Path):
    from reproduce.stage import StageOptions, run_stage

    return run_stage(StageOptions(stage="fcn16s", out=folder / "runs", sbd_root=folder / "sbd", eval_every=0))


@entry("stage given a corrupt base caffemodel")
def _corrupt_base(folder: Path):
    from fcndata.synthetic import write_synthetic
    from reproduce.stage import StageOptions, run_stage

    paths = write_synthetic(folder / "data", n_train=2, n_val=3, size=(16, 24))
    weights = folder / "vgg16.caffemodel"
    weights.write_bytes(b"\x0a\xff\xff\xff\xff\x0f" + bytes(10))
    options = StageOptions(
        stage="fcn32s", out=folder / "runs", sbd_root=paths.sbd_root, base_weights=weights, eval_every=0
    )
    return run_stage(options)


# ---------------------------------------------------------------- casting classifiers

CLASSIFIER = """name: "small-classifier"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool1" top: "fc6" inner_product_param { num_output: 8 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc6" top: "fc8" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


def cast(folder: Path, text: str, **options):
    from porting.fully_convolutional import cast_classifier

    path = write_text(folder, "classifier.prototxt", text)
    return cast_classifier(porting.read_prototxt(path), source=str(path), **options)


@entry("classifier without an InnerProduct given to `porting.fully_convolutional`")
def _no_classifier(folder: Path):
    return cast(folder, TINY_NET)


@entry("classifier with global pooling before its classifier")
def _global_pooling(folder: Path):
    return cast(
        folder, replace_line(CLASSIFIER, "pool: MAX kernel_size: 2 stride: 2", "pool: AVE global_pooling: true")
    )


@entry("a layer that mixes locations after a cast fully connected layer")
def _mixing_layer(folder: Path):
    text = replace_line(
        CLASSIFIER,
        'layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }',
        'layer { name: "norm6" type: "Softmax" bottom: "fc6" top: "fc6" }',
    )
    return cast(folder, text)


@entry("`--drop` names no layer of the classifier")
def _drop_unknown(folder: Path):
    return cast(folder, CLASSIFIER, drop=["pool5"])


@entry("first convolution padded too little to crop the score (`--pad 0`)")
def _pad_too_small(folder: Path):
    from prototxt.backbone import fcn32s_nets

    return fcn32s_nets(cast(folder, CLASSIFIER, pad=0), pad=0, source="classifier.prototxt")


@entry("classifier weights that do not fit its definition")
def _cast_weights(folder: Path):
    from prototxt.backbone import fully_convolutional

    other = porting.CaffeNet(porting.parse_prototxt(replace_line(CLASSIFIER, "num_output: 8", "num_output: 6")))
    return fully_convolutional(porting.parse_prototxt(CLASSIFIER), other.blobs_numpy(), source="classifier.prototxt")


# ---------------------------------------------------------------- running


def run_entry(item: Entry, folder: Path) -> Outcome:
    """Run one entry in its own folder; the folder's path reads `<tmp>` in the message."""
    try:
        item.run(folder)
    except Exception as exc:  # the point is to record whatever comes out
        message = " ".join(_ANSI.sub("", str(exc)).replace(str(folder), TMP).split())
        message = _ADDRESS.sub(" at 0x...", message)
        return Outcome(item.what, type(exc).__name__, message, isinstance(exc, FcnError))
    return Outcome(item.what, "", "(accepted: no error raised)", False)


def collect() -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory() as root:
        for index, item in enumerate(ENTRIES):
            folder = Path(root) / f"case{index}"
            folder.mkdir()
            outcomes.append(run_entry(item, folder))
    return outcomes


def render(outcomes: list[Outcome]) -> str:
    lines = [
        "# Bad inputs and the messages they get",
        "",
        "Generated by `python -m tests.error_catalog --write` from the entries in",
        "`tests/error_catalog.py`: each row's input was built and fed to the product, and the",
        "error type and message are what it actually raised (temporary folders read `<tmp>`,",
        "object addresses `0x...`; terminal colour codes are dropped).",
        "Every error is a `porting.errors.FcnError`; the CLIs print the message as",
        "`error: <message>` and exit with status 1 (usage errors: 2). `tests/test_error_catalog.py` fails when",
        "this page is stale or when an input escapes the error family.",
        "",
        "| input | error | message |",
        "| --- | --- | --- |",
    ]
    for outcome in outcomes:
        error = f"`{outcome.error}`" if outcome.error else "(none)"
        if outcome.error and not outcome.in_family:
            error += " (outside FcnError)"
        message = outcome.message.replace("|", "\\|").replace("`", "'")
        lines.append(f"| {outcome.what} | {error} | {message} |")
    return "\n".join(lines) + "\n"


def cap_memory(headroom: int = MEMORY_HEADROOM) -> None:
    """Limit this process's address space to what it uses now plus `headroom`."""
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.error_catalog", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"regenerate {DOC.relative_to(DOC.parents[1])}")
    action.add_argument("--check", action="store_true", help="exit 1 if the doc is stale or an entry escapes FcnError")
    args = parser.parse_args(argv)
    cap_memory()
    torch.set_num_threads(1)
    outcomes = collect()
    text = render(outcomes)
    escaped = [o for o in outcomes if not o.in_family]
    for outcome in escaped:
        print(f"outside the FcnError family: {outcome.what}: {outcome.error or 'no error'}: {outcome.message}")
    if args.write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC} ({len(outcomes)} inputs)")
        return 1 if escaped else 0
    stale = not DOC.is_file() or DOC.read_text(encoding="utf-8") != text
    if stale:
        print(f"{DOC} is stale: run `python -m tests.error_catalog --write`")
    return 1 if stale or escaped else 0


if __name__ == "__main__":
    sys.exit(main())
