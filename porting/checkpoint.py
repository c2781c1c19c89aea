"""Loading nets: Caffe files (prototxt + caffemodel) or a converted, self-contained checkpoint.

A converted checkpoint comes in two formats, told apart by their first bytes:

- `.pt`: `torch.save` of {"format": "fcn-faithfully/1", "net_text": <phase-filtered net as
  prototxt>, "phase": ..., "state_dict": {"<layer>.<blob index>": tensor}, and the net's metadata
  (`porting.metadata.FIELDS`: "classes", "mean", ..., each optional)}, read with `weights_only=True`,
  so loading one never runs pickled code;
- `.safetensors`: one float32 tensor per blob under its `state_dict()` key, and in the
  header's metadata (text only) "format", "net_text", "phase" as above and the net's
  metadata fields JSON-encoded; no pickle at all, and the weights are memory-mapped, not read.

A caffemodel's metadata comes from its JSON sidecar, if any.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from porting.atomic import atomic_path
from porting.caffemodel import iter_caffemodel
from porting.errors import FcnError, FormatError
from porting.metadata import FIELDS, NetMetadata, read_sidecar
from porting.net import CaffeNet
from porting.prototxt import parse_prototxt, read_prototxt, to_text


class CheckpointError(FormatError):
    """A converted checkpoint (`.pt`, `.safetensors`) or training snapshot that cannot be used."""


FORMAT = "fcn-faithfully/1"
#: the first bytes of a zip archive, which `torch.save` writes (prototxt text never starts so)
ZIP_MAGIC = b"PK\x03\x04"

#: progress callback: (layer name, bytes of weights read so far)
Progress = Callable[[str, int], None]


#: checkpoint formats (`save_checkpoint(kind=...)`, `porting.convert --format`) and the suffix of each
KINDS = {"pt": (".pt", ".pth"), "safetensors": (".safetensors",)}
#: a safetensors file: 8 bytes (little-endian u64) giving the length of the JSON header that follows
SAFETENSORS_LENGTH = struct.Struct("<Q")


def kind_for_suffix(path: str | os.PathLike) -> str | None:
    """The checkpoint format a file name says (`KINDS`), or None."""
    suffix = Path(path).suffix
    return next((kind for kind, suffixes in KINDS.items() if suffix in suffixes), None)


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """`"pt"` for a file starting as a zip archive does (even a truncated one), `"safetensors"` for one
    starting with a header length that fits the file and then "{", else what its suffix says (None:
    not a checkpoint, e.g. prototxt text)."""
    try:
        with open(path, "rb") as file:
            head = file.read(SAFETENSORS_LENGTH.size + 1)
        size = os.path.getsize(path)
    except OSError:
        return kind_for_suffix(path)
    if head.startswith(ZIP_MAGIC):
        return "pt"
    if len(head) == SAFETENSORS_LENGTH.size + 1 and head[-1:] == b"{":
        (length,) = SAFETENSORS_LENGTH.unpack(head[:-1])
        if length + SAFETENSORS_LENGTH.size <= size:
            return "safetensors"
    return kind_for_suffix(path)


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A converted checkpoint by content or name (`checkpoint_kind`)."""
    return checkpoint_kind(path) is not None


def stream_caffemodel(
    caffemodel: str | os.PathLike, progress: Progress | None = None
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(layer name, blobs) pairs straight from the file, for `CaffeNet.load_blobs`."""
    done = 0
    for name, _type, blobs in iter_caffemodel(caffemodel):
        done += sum(np.asarray(b).nbytes for b in blobs)
        if progress is not None:
            progress(name, done)
        yield name, blobs


def load(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    phase: str = "TEST",
    progress: Progress | None = None,
) -> CaffeNet:
    """A `CaffeNet` from a net definition (+ optional Caffe weights), or from a converted `.pt`.

    Weights stream in layer by layer and become the parameters without a copy; the net
    layers they cover are never filled first, so peak memory stays about the size of the
    weights. Source layers the net lacks are ignored and net layers the weights lack get
    their fillers, as in Caffe's CopyTrainedLayersFrom.

    Args:
        prototxt: a net definition (V0, V1 or V2 text), or a checkpoint written by
            `save_checkpoint` / `python -m porting.convert`, `.pt` or `.safetensors` (recognized by its content).
        caffemodel: Caffe weights (V1 or V2 layout) for `prototxt`; None keeps the fillers' values.
        phase: "TEST" or "TRAIN": which layers Caffe's include/exclude rules keep.
        progress: called as `progress(layer name, bytes read so far)` while the weights stream in.

    Returns:
        The net, a `torch.nn.Module` on the CPU in eval-ready float32 (call `.eval()` for inference).

    Raises:
        PrototxtError: the definition cannot be read, parsed or validated (names file and line).
        UnsupportedLayerError: the definition uses a layer type this port does not implement.
        CaffemodelError: the weights file cannot be read or is not a valid caffemodel.
        ShapeMismatchError: a weight blob's shape differs from the one the definition implies.
        CheckpointError: a converted checkpoint is damaged, or was given together with a caffemodel.
    """
    if is_checkpoint(prototxt):
        if caffemodel is not None:
            raise CheckpointError(f"{prototxt}: a converted checkpoint already holds its weights; give no caffemodel")
        return load_checkpoint(prototxt)
    return load_caffe(prototxt, caffemodel, phase, progress)


def load_caffe(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    phase: str = "TEST",
    progress: Progress | None = None,
) -> CaffeNet:
    """`load` of Caffe files; `net.load_report` says what the weights covered (None without a caffemodel)."""
    net_param = read_prototxt(prototxt, phase)
    net = CaffeNet(net_param, phase=phase, source=str(prototxt), fill=caffemodel is None)
    if caffemodel is None:
        return net
    report = net.load_blobs(stream_caffemodel(caffemodel, progress), source=str(caffemodel))
    if report.missing and not report.loaded:
        raise FormatError(
            f"{caffemodel}: none of its {len(report.ignored)} layers with weights is named like a layer of "
            f"{prototxt} ({_some(report.ignored)} vs the net's {_some(report.missing)}); "
            "is this the caffemodel for this net? Layer names must match, as in Caffe's CopyTrainedLayersFrom"
        )
    net.metadata = read_sidecar(caffemodel) or NetMetadata()
    return net


def _some(names: list[str], count: int = 3) -> str:
    """The first few names, for messages."""
    if not names:
        return "none"
    shown = ", ".join(f"'{name}'" for name in names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def save_checkpoint(net: CaffeNet, path: str | os.PathLike, kind: str | None = None) -> None:
    """Write `net` (definition + weights + `net.metadata`) as one self-contained file, atomically.

    Args:
        net: the net.
        path: the file to write.
        kind: "pt" or "safetensors" (`KINDS`); None: what the suffix of `path` says, else "pt".

    On failure nothing is left behind (no `.partial` file) and the error is a `CheckpointError`.
    """
    path = Path(path)
    kind = kind or kind_for_suffix(path) or "pt"
    if kind not in KINDS:
        raise ValueError(f"checkpoint format {kind!r}: expected one of {', '.join(KINDS)}")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: cannot write: folder {path.parent} does not exist")
    header = {"format": FORMAT, "net_text": to_text(net.net_param), "phase": net.phase}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    try:
        with atomic_path(path) as temporary:
            if kind == "safetensors":
                _save_safetensors(state, temporary, header, net.metadata)
            else:
                torch.save({**header, "state_dict": state, **net.metadata.to_dict()}, temporary)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except RuntimeError as exc:  # how torch's zip writer reports open and write failures
        raise CheckpointError(f"{path}: cannot write ({_first_sentence(exc)})") from None


def _save_safetensors(
    state: dict[str, torch.Tensor], path: str | os.PathLike, header: dict, metadata: NetMetadata
) -> None:
    save_file(state, path, {**header, **{key: json.dumps(value) for key, value in metadata.to_dict().items()}})


def load_checkpoint(path: str | os.PathLike) -> CaffeNet:
    """Rebuild the net a converted checkpoint (`.pt` or `.safetensors`) describes; any defect is a
    `CheckpointError` naming the file."""
    if checkpoint_kind(path) == "safetensors":
        text, phase, state, metadata = _read_safetensors(path)
    else:
        text, phase, state, metadata = _read_pt(path)
    if not isinstance(text, str) or not isinstance(state, dict) or phase not in ("TRAIN", "TEST"):
        raise CheckpointError(f"{path}: 'net_text' (str), 'phase' and 'state_dict' (dict) are required")
    not_float32 = [k for k, v in state.items() if not isinstance(v, torch.Tensor) or v.dtype != torch.float32]
    if not_float32:
        raise CheckpointError(
            f"{path}: weights must be float32 tensors; these are not: {', '.join(map(str, not_float32))}"
        )
    source = f"{path} (net_text)"
    try:
        net = CaffeNet(parse_prototxt(text, source, phase), phase=phase, source=source, fill=False)
    except FcnError as exc:
        raise CheckpointError(f"{path}: stored net definition is invalid: {exc}") from None
    try:  # the stored tensors become the parameters: no filled copy is made first
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored net: {exc}") from None
    try:
        net.metadata = NetMetadata.from_dict(metadata, str(path))
    except FcnError as exc:
        raise CheckpointError(str(exc)) from None
    return net


#: what a checkpoint reader returns: net text, phase, state dict, {"classes", "mean"} (either may be absent)
Stored = tuple[object, object, object, dict]


def _read_pt(path: str | os.PathLike) -> Stored:
    """The parts of a `torch.save` checkpoint, which must be a complete zip archive before torch reads
    it, so that a truncated or foreign file is named as such instead of by torch's reader internals."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head != ZIP_MAGIC and not ZIP_MAGIC.startswith(head):
        raise CheckpointError(f"{path}: not a converted checkpoint (not a zip archive, which torch.save writes)")
    if head != ZIP_MAGIC or not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: truncated or damaged checkpoint (no complete zip archive)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's zip reader raises RuntimeError for damaged archives
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            raise CheckpointError(f"{path}: {_refusal(exc)}: checkpoints hold tensors and plain data only") from None
        raise CheckpointError(f"{path}: truncated or damaged checkpoint ({_first_sentence(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected format '{FORMAT}', found {found!r}")
    metadata = {key: payload[key] for key in FIELDS if key in payload}
    return payload.get("net_text"), payload.get("phase", "TEST"), payload.get("state_dict"), metadata


def _read_safetensors(path: str | os.PathLike) -> Stored:
    """The parts of a safetensors checkpoint; its tensors are memory-mapped from the file."""
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            if header.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path}: a safetensors file, but not a converted net: expected metadata format '{FORMAT}', "
                    f"found {header.get('format')!r} (python -m porting.convert --format safetensors writes one)"
                )
            state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or damaged safetensors file ({exc})") from None
    metadata = {}
    for key in FIELDS:
        if key in header:
            try:
                metadata[key] = json.loads(header[key])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path}: metadata '{key}' is not JSON ({exc})") from None
    return header.get("net_text"), header.get("phase", "TEST"), state, metadata


def _first_sentence(exc: BaseException) -> str:
    """torch's reader and writer errors lead with the fact and follow with paragraphs of advice."""
    return re.split(r"\.\s", str(exc).strip(), maxsplit=1)[0].rstrip(".")


def _refusal(exc: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler refused, without torch's advice on how to load it anyway."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
    if found:
        name = found.group(1)
        return f"refuses global '{name if '.' in name else f'builtins.{name}'}'"
    detail = re.search(r"WeightsUnpickler error: ([^\n]*)", str(exc))
    return f"refuses its pickle ({detail.group(1).rstrip('.') if detail else _first_sentence(exc)})"
