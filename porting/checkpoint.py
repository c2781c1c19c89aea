"""Loading nets: Caffe files (prototxt + caffemodel) or a converted, self-contained `.pt`.

A converted checkpoint is `torch.save` of
{"format": "fcn-faithfully/1", "net_text": <phase-filtered net as prototxt>, "phase": ...,
"state_dict": {"<layer>.<blob index>": tensor}}; it is read with `weights_only=True`, so
loading one never runs pickled code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from porting.caffemodel import iter_caffemodel
from porting.errors import CheckpointError, FcnError
from porting.net import CaffeNet
from porting.prototxt import parse_prototxt, read_prototxt, to_text

FORMAT = "fcn-faithfully/1"

#: progress callback: (layer name, bytes of weights read so far)
Progress = Callable[[str, int], None]


CHECKPOINT_SUFFIXES = (".pt", ".pth")


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A `.pt`/`.pth` name, or a zip archive (torch.save's format; prototxt text never is one)."""
    path = Path(path)
    return path.suffix in CHECKPOINT_SUFFIXES or (path.is_file() and zipfile.is_zipfile(path))


def stream_caffemodel(caffemodel: str | os.PathLike, progress: Progress | None = None) -> Iterator[tuple[str, list[np.ndarray]]]:
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

    Weights stream in layer by layer (peak memory ~ the net plus one layer). Source layers
    the net lacks are ignored and net layers the weights lack keep their fillers, as in
    Caffe's CopyTrainedLayersFrom.
    """
    if is_checkpoint(prototxt):
        if caffemodel is not None:
            raise CheckpointError(f"{prototxt}: a converted checkpoint already holds its weights; give no caffemodel")
        return load_checkpoint(prototxt)
    net = CaffeNet(read_prototxt(prototxt), phase=phase)
    if caffemodel is not None:
        net.load_blobs(stream_caffemodel(caffemodel, progress), source=str(caffemodel))
    return net


def save_checkpoint(net: CaffeNet, path: str | os.PathLike) -> None:
    """Write `net` (definition + weights) as one self-contained file, atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "net_text": to_text(net.net_param),
        "phase": net.phase,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | os.PathLike) -> CaffeNet:
    """Rebuild the net a converted checkpoint describes; any defect is a `CheckpointError`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ValueError for foreign files
        raise CheckpointError(f"{path}: not a converted checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected format '{FORMAT}', found {found!r}")
    text, phase, state = payload.get("net_text"), payload.get("phase", "TEST"), payload.get("state_dict")
    if not isinstance(text, str) or not isinstance(state, dict) or phase not in ("TRAIN", "TEST"):
        raise CheckpointError(f"{path}: 'net_text' (str), 'phase' and 'state_dict' (dict) are required")
    try:
        net = CaffeNet(parse_prototxt(text, source=f"{path} (net_text)"), phase=phase)
    except FcnError as exc:
        raise CheckpointError(f"{path}: stored net definition is invalid: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored net: {exc}") from None
    return net
