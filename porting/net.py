"""`CaffeNet`: runs a Caffe net definition as a torch module, layer by layer, as Caffe does.

Blobs are names; every layer reads its bottoms by name and binds its tops to new
tensors, so an in-place layer (top == bottom) rebinds the name. `trace` and autograd
never see a value overwritten; plain inference lets an in-place layer that can
(`run_in_place`, i.e. ReLU) overwrite its bottom when no caller input and no other blob
still to be read shares that memory, which is Caffe's own in-place semantics and saves
a pass and an allocation over the largest maps.

Shapes are inferred at construction by running every layer on meta tensors, which
catches inconsistent definitions before any weight is allocated; at run time the net
takes whatever spatial size it is given.

Weights are allocated only once the whole definition has been checked, and a net built
with `fill=False` allocates none until `load_blobs`, which adopts the given arrays as the
parameters and fills only what they do not cover: loading a caffemodel then peaks at about
the size of its weights, not at twice a layer more.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from porting.errors import FcnError, FormatError, PrototxtError, ShapeMismatchError, UnsupportedLayerError
from porting.layers import LOSS_TYPES, CaffeLayer, DataLayerSpec, make_layer
from porting.metadata import NetMetadata
from porting.netstate import filter_phase
from porting.proto import caffe_pb2
from porting.prototxt import validate
from porting.transform import CaffeTransform
from porting.upgrade import upgrade_net

Shape = tuple[int, ...]

#: Learnable values a whole net may hold (VGG16 has 138M); more is taken as a typo'd size.
MAX_NET_PARAMS = 2**32


@dataclass(frozen=True)
class ParamInfo:
    """One learnable blob with the multipliers its layer's `param { }` gives (default 1 / 1)."""

    layer: str
    index: int
    parameter: nn.Parameter
    lr_mult: float
    decay_mult: float


@dataclass
class LoadReport:
    """What `load_blobs` did: layers loaded, source layers the net lacks, net layers the source lacks."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One layer of the execution plan, with the blob names it reads and writes."""

    name: str
    layer: CaffeLayer
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]

    @property
    def in_place(self) -> bool:
        return len(self.tops) == 1 and self.tops == self.bottoms


#: Runs a step instead of its layer: bottoms in, one tensor per top out.
Kernel = Callable[..., list[Tensor]]


def module_name(layer_name: str) -> str:
    """The submodule (and state_dict prefix) of a layer: "." becomes U+2024, which torch allows."""
    return layer_name.replace(".", "\u2024")


def legacy_shape_matches(found: Shape, expected: Shape) -> bool:
    """Caffe's Blob::ShapeEquals for legacy (num, channels, height, width) blobs:
    the expected shape, left-padded with ones to 4-D, equals the stored one."""
    return len(found) == 4 and len(expected) <= 4 and (1,) * (4 - len(expected)) + tuple(expected) == tuple(found)


def _needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    return bool(net.layers or net.input or net.input_shape or net.input_dim)


class CaffeNet(nn.Module):
    """A Caffe net as a torch module.

    `forward` takes the inputs positionally (in `inputs` order) or by blob name and returns
    {output blob name: tensor}; `trace` returns every layer's first top as it was computed.
    Parameters are registered per layer as `<layer name>.<blob index>`.

    `source` (the definition's file) prefixes every error about the definition. With
    `fill=False` the parameters stay unallocated (meta) until `load_blobs` gives them values.

    Args:
        net_param: the definition (V0/V1 forms are upgraded first, as Caffe does).
        phase: "TEST" or "TRAIN": which layers Caffe's include/exclude rules keep.
        input_shapes: blob name -> NCHW shape for inputs whose shape the definition does not
            give (data layers default to 1x3x500x500 data and 1x1x500x500 label).
        source: the definition's file, named in every error about it.
        fill: initialize the learnable blobs with their Caffe fillers now.

    Raises:
        ValueError: `phase` is neither "TRAIN" nor "TEST".
        PrototxtError: the definition is invalid (unknown bottoms, bad fields, shapes that do not fit).
        UnsupportedLayerError: a layer type this port does not implement.
    """

    def __init__(
        self,
        net_param: caffe_pb2.NetParameter,
        phase: str = "TEST",
        input_shapes: Mapping[str, Shape] | None = None,
        *,
        source: str = "<net>",
        fill: bool = True,
    ) -> None:
        super().__init__()
        self.phase = phase.upper()
        if self.phase not in ("TRAIN", "TEST"):
            raise ValueError(f"phase must be 'TRAIN' or 'TEST', got {phase!r}")
        self.source = source
        #: class names and input mean, as the loader found them (`porting.metadata`)
        self.metadata = NetMetadata()
        #: what the last `load_blobs` covered (a caffemodel's layers); None before any
        self.load_report: LoadReport | None = None
        if _needs_upgrade(net_param):
            net_param = upgrade_net(net_param, source)
        validate(net_param, self.phase, source=source)
        self.net_param = filter_phase(net_param, self.phase, source=source)
        if not self.net_param.layer:
            where = f" in phase {self.phase} (all {len(net_param.layer)} are excluded)" if net_param.layer else ""
            raise PrototxtError(
                source,
                f"the net has no layers{where}; a net definition lists `layer {{ ... }}` blocks "
                "(is this an empty file, or a solver file instead of a net?)",
            )
        self.inputs: list[str] = []
        self.data_layers: dict[str, DataLayerSpec] = {}
        self.input_shapes: dict[str, Shape] = {}
        self._steps: list[Step] = []
        self._layers: dict[str, CaffeLayer] = {}
        self._build(dict(input_shapes or {}))
        self._check_shared_params()
        if fill:
            self._fill(unset_only=False)
        self.outputs: list[str] = self._find_outputs()
        consumed = {b for step in self._steps for b in step.bottoms}
        self._consumed_inputs = [name for name in self.inputs if name in consumed]
        self._last_read = self._find_last_reads()

    @contextlib.contextmanager
    def _definition_errors(self) -> Iterator[None]:
        """Errors met while building or filling are the definition's: located in `source`, and a
        layer's input check failing on the inferred shapes is a `PrototxtError` like the rest."""
        try:
            yield
        except UnsupportedLayerError as exc:
            raise UnsupportedLayerError(f"{self.source}: {exc}") from None
        except FormatError as exc:
            raise PrototxtError(self.source, str(exc)) from None

    def _build(self, input_shapes: dict[str, Shape]) -> None:
        """Every layer on meta tensors, so the whole definition is checked before any allocation."""
        meta: dict[str, Tensor] = {}
        total = 0
        with self._definition_errors():
            for index, param in enumerate(self.net_param.layer):
                total += self._build_layer(index, param, input_shapes, meta, total)
        #: blob name -> shape at the input shapes the net was built for (its last producer's)
        self.inferred_shapes: dict[str, Shape] = {name: tuple(blob.shape) for name, blob in meta.items()}

    def _fill(self, unset_only: bool) -> None:
        """Give learnable blobs their fillers' values (all, or just those still unallocated)."""
        with self._definition_errors():
            for layer in self._layers.values():
                layer.reset_parameters(unset_only=unset_only)

    def _build_layer(self, index, param, input_shapes, meta, total) -> int:
        """Build, shape and register one layer; returns its number of learnable values."""
        name = param.name
        where = f"layer '{name}'" if name else f"layer #{index}"
        if not name:
            raise PrototxtError(where, "every layer needs a name")
        if name in self._layers:
            raise PrototxtError(where, "duplicate layer name")
        layer = make_layer(param, [tuple(meta[b].shape) for b in param.bottom], self.phase)
        count = sum(math.prod(shape) for shape in layer.blob_shapes())
        if total + count > MAX_NET_PARAMS:
            raise PrototxtError(
                where, f"its {count} learnable values bring the net to {total + count}, more than {MAX_NET_PARAMS}"
            )
        if layer.is_input:
            self._bind_input_shapes(layer, param, input_shapes, meta, where)
        else:
            self._infer_tops(layer, param, meta, where)
        try:
            self.add_module(module_name(name), layer)
        except KeyError:
            raise PrototxtError(where, "this layer name is reserved by CaffeNet (rename the layer)") from None
        self._layers[name] = layer
        self._steps.append(Step(name, layer, tuple(param.bottom), tuple(param.top)))
        return count

    def _bind_input_shapes(self, layer, param, input_shapes, meta, where) -> None:
        for top, shape in zip(param.top, layer.top_shapes):
            shape = tuple(input_shapes.get(top, shape) or ())
            if not shape:
                raise PrototxtError(
                    where, f"no shape known for input '{top}': pass input_shapes={{'{top}': (N, C, H, W)}}"
                )
            meta[top] = torch.empty(shape, device="meta")
            self.input_shapes[top] = shape
            if top not in self.inputs:
                self.inputs.append(top)
        if layer.spec is not None:
            self.data_layers[param.name] = layer.spec

    @staticmethod
    def _infer_tops(layer, param, meta, where) -> None:
        bottoms = [meta[b] for b in param.bottom]
        try:
            tops = layer.infer_tops(*bottoms)
        except FcnError:
            raise
        except (RuntimeError, ValueError, IndexError) as exc:
            shapes = ", ".join(str(tuple(b.shape)) for b in bottoms)
            raise PrototxtError(where, f"cannot run on bottom shapes {shapes}: {exc}") from None
        if len(tops) != len(param.top):
            raise PrototxtError(where, f"computes {len(tops)} top(s) but declares {len(param.top)}")
        meta.update(zip(param.top, tops))

    def _find_outputs(self) -> list[str]:
        """Caffe's rule: blobs still available after every layer consumed its bottoms."""
        available: dict[str, None] = {}
        for step in self._steps:
            for b in step.bottoms:
                available.pop(b, None)
            for t in step.tops:
                available[t] = None
        return list(available)

    def _find_last_reads(self) -> dict[str, float]:
        """Blob name -> index of the last step that reads it (net outputs: never done)."""
        last: dict[str, float] = {}
        for index, step in enumerate(self._steps):
            last.update((b, index) for b in step.bottoms)
        last.update((name, math.inf) for name in self.outputs)
        return last

    def _check_shared_params(self) -> None:
        seen: dict[str, str] = {}
        for param in self.net_param.layer:
            for spec in param.param:
                if spec.name and spec.name in seen:
                    raise UnsupportedLayerError(
                        f"{self.source}: layer '{param.name}': parameter '{spec.name}' is shared with layer "
                        f"'{seen[spec.name]}'; shared parameters are not supported"
                    )
                if spec.name:
                    seen[spec.name] = param.name

    @property
    def steps(self) -> tuple[Step, ...]:
        """The execution plan: every layer in Caffe's order with its bottoms and tops."""
        return tuple(self._steps)

    @property
    def layers(self) -> dict[str, CaffeLayer]:
        """Layer name -> module, in execution order."""
        return dict(self._layers)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Top blob -> weight in the total loss (Caffe: `loss_weight`, default 1 for a loss layer's first top)."""
        weights: dict[str, float] = {}
        for param in self.net_param.layer:
            given = list(param.loss_weight)
            if not given and param.type in LOSS_TYPES:
                given = [1.0]
            weights.update((t, float(w)) for t, w in zip(param.top, given) if w)
        return weights

    def _bind(self, args: tuple, kwargs: dict) -> dict[str, Tensor]:
        if len(args) > len(self.inputs):
            raise TypeError(f"the net takes {len(self.inputs)} input(s) {self.inputs}, got {len(args)} positional")
        blobs = dict(zip(self.inputs, args))
        for name, value in kwargs.items():
            if name not in self.inputs:
                raise TypeError(f"'{name}' is not an input of the net; inputs are {self.inputs}")
            if name in blobs:
                raise TypeError(f"input '{name}' given twice")
            blobs[name] = value
        absent = [name for name in self._consumed_inputs if name not in blobs]
        if absent:
            raise TypeError(f"missing input(s) {absent}; the net takes {self.inputs}")
        for name, value in blobs.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"input '{name}' must be a torch.Tensor, got {type(value).__name__}")
        return blobs

    def _run(
        self,
        blobs: dict[str, Tensor],
        record: dict[str, Tensor] | None,
        kernels: Mapping[str, Kernel | None] | None = None,
    ) -> dict[str, Tensor]:
        kernels = kernels or {}
        overwrite = record is None and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
        callers = {t.untyped_storage().data_ptr() for t in blobs.values()} if overwrite else set()
        for index, step in enumerate(self._steps):
            if step.layer.is_input:
                if record is not None and step.tops and step.tops[0] in blobs:
                    record[step.name] = blobs[step.tops[0]]
                continue
            run = kernels.get(step.name, step.layer)
            if run is None:
                continue
            bottoms = [blobs[b] for b in step.bottoms]
            if overwrite and run is step.layer and self._may_overwrite(step, index, blobs, callers):
                run = cast(Kernel, step.layer.run_in_place)
            try:
                tops = run(*bottoms)
            except FcnError:
                raise
            except RuntimeError as exc:
                shapes = ", ".join(str(tuple(b.shape)) for b in bottoms)
                raise FormatError(f"layer '{step.name}' ({step.layer.layer_type}) on inputs {shapes}: {exc}") from exc
            blobs.update(zip(step.tops, tops))
            if record is not None and tops:
                record[step.name] = tops[0].detach()
        return blobs

    def _may_overwrite(self, step: Step, index: int, blobs: dict[str, Tensor], callers: set[int]) -> bool:
        """Whether an in-place step may write into its bottom: the layer can, nothing records
        gradients, and the memory is neither the caller's nor that of another blob (a Split
        top, a Dropout identity, a Crop view) still to be read after this step."""
        if not step.in_place or not hasattr(step.layer, "run_in_place"):
            return False
        x = blobs[step.bottoms[0]]
        if torch.is_grad_enabled() and x.requires_grad:
            return False
        memory = x.untyped_storage().data_ptr()
        if memory in callers:
            return False
        return not any(
            name != step.bottoms[0]
            and self._last_read.get(name, -1) > index
            and t.untyped_storage().data_ptr() == memory
            for name, t in blobs.items()
        )

    def forward(self, *args: Tensor, **kwargs: Tensor) -> dict[str, Tensor]:
        """Run the net as Caffe's Forward does.

        Args:
            *args: the input blobs in `inputs` order (float32 NCHW; BGR, mean-subtracted for the FCN nets).
            **kwargs: or the input blobs by name (`data=x, label=y`).

        Returns:
            Output blob name -> tensor, for every net output (blob produced and never consumed) computed.

        Raises:
            TypeError: an input is missing, unknown, or not a tensor.
            FormatError: an input does not fit a layer (rank, channels, size), naming the layer.
        """
        return self.forward_with({}, *args, **kwargs)

    def forward_with(self, kernels: Mapping[str, Kernel | None], *args: Tensor, **kwargs: Tensor) -> dict[str, Tensor]:
        """`forward` with some steps run by other kernels (step name -> kernel), for inference
        back ends; a step mapped to None is skipped (an in-place layer its kernel fused)."""
        blobs = self._run(self._bind(args, kwargs), None, kernels)
        return {name: blobs[name] for name in self.outputs if name in blobs}

    @torch.no_grad()
    def trace(self, *args: Tensor, **kwargs: Tensor) -> OrderedDict[str, Tensor]:
        """Every layer's output, for layer-by-layer comparison with another implementation.

        Nothing is overwritten while tracing, so a value here is what the layer produced even
        when a later in-place layer (ReLU) rebinds the blob name: `conv1_1` is pre-ReLU.

        Args:
            *args, **kwargs: the inputs, as for `forward`.

        Returns:
            Layer name -> the first top that layer computed (detached), in execution order.

        Raises:
            TypeError, FormatError: as `forward`.
        """
        record: OrderedDict[str, Tensor] = OrderedDict()
        self._run(self._bind(args, kwargs), record)
        return record

    @property
    def transform(self) -> CaffeTransform:
        """The net's own input transform: an RGB image (PIL, uint8 array or tensor) -> its input,
        BGR, 0..255, `metadata.mean` subtracted, N x 3 x H x W (`porting.transform`).

        Raises:
            FormatError: the net reads several inputs or not 3 channels, its input is not a colour image
                (`metadata.features`, e.g. HHA), or its metadata has no mean.
        """
        if len(self.inputs) != 1:
            raise FormatError(
                f"{self.source}: the net reads {len(self.inputs)} inputs ({', '.join(self.inputs)}); the image "
                "transform prepares one RGB image"
            )
        shape = self.input_shapes.get(self.inputs[0])
        if shape is None or len(shape) != 4 or shape[1] != 3:
            raise FormatError(f"{self.source}: input '{self.inputs[0]}' has shape {shape}, not N x 3 x H x W")
        if self.metadata.features is not None:
            raise FormatError(
                f"{self.source}: the net reads {self.metadata.features} features, not a colour image, so the image "
                f"transform does not apply; give it the {self.metadata.features} image's channels as stored, "
                "0..255 float32 minus `net.metadata.mean`, N x 3 x H x W (as fcndata's dataset of that family reads them)"
            )
        if self.metadata.mean is None or len(self.metadata.mean) != 3:
            raise FormatError(
                f"{self.source}: the net's metadata has no 3-value input mean (B, G, R); set one with "
                "porting.metadata.complete_metadata(net)"
            )
        return CaffeTransform(self.metadata.mean)

    def param_specs(self) -> list[ParamInfo]:
        """The learnable blobs as a solver needs them.

        Returns:
            One `ParamInfo` per learnable blob (layer, blob index, parameter, lr_mult,
            decay_mult from the layer's `param { }`, default 1 / 1), in layer and blob order.
        """
        infos = []
        for param in self.net_param.layer:
            layer = self._layers[param.name]
            for index, blob in enumerate(layer.blobs()):
                spec = param.param[index] if index < len(param.param) else caffe_pb2.ParamSpec()
                infos.append(ParamInfo(param.name, index, blob, spec.lr_mult, spec.decay_mult))
        return infos

    def load_blobs(
        self,
        blobs: Mapping[str, list[np.ndarray]] | Iterable[tuple[str, list[np.ndarray]]],
        source: str = "",
        strict: bool = False,
    ) -> LoadReport:
        """Copy Caffe blobs into the layers of the same name, as Caffe's CopyTrainedLayersFrom.

        Shapes must match exactly, or as legacy 4-D dims (left-padded with ones). Source
        layers the net lacks are ignored and net layers the source lacks keep their values,
        unless `strict`. Accepts a mapping or an iterable of (name, blobs) pairs, so a
        caffemodel can stream in layer by layer.

        A blob still unallocated (`fill=False`) takes a writable float32 array as its memory,
        without a copy (so pass arrays nobody else keeps, such as `iter_caffemodel`'s); blobs
        the source does not give get their fillers at the end.

        Args:
            blobs: layer name -> arrays in Caffe shapes, or (name, arrays) pairs (`read_caffemodel`,
                `iter_caffemodel`).
            source: where the blobs come from, named in errors.
            strict: require the blobs to cover exactly the net's learnable layers.

        Returns:
            A `LoadReport`: the layers loaded, the net layers without weights (`missing`) and the
            source layers the net lacks (`ignored`); also kept as `self.load_report`.

        Raises:
            ShapeMismatchError: a blob's shape differs from the layer's (legacy 4-D dims accepted).
            FormatError: a layer gets a different number of blobs, or `strict` and the cover is not exact.
        """
        report = LoadReport()
        items = blobs.items() if isinstance(blobs, Mapping) else blobs
        for name, arrays in items:
            layer = self._layers.get(name)
            if layer is None or not layer.blob_shapes():
                if len(arrays):
                    report.ignored.append(name)
                continue
            self._copy_layer(name, layer, arrays, source)
            report.loaded.append(name)
        self._fill(unset_only=True)
        loaded = set(report.loaded)
        report.missing = [n for n, layer in self._layers.items() if layer.blob_shapes() and n not in loaded]
        self.load_report = report
        if strict and (report.missing or report.ignored):
            origin = f"{source}: " if source else ""
            raise FormatError(
                f"{origin}weights do not cover the net exactly: net layers without weights {report.missing}, "
                f"weights for layers the net lacks {report.ignored}"
            )
        return report

    @staticmethod
    def _copy_layer(name: str, layer: CaffeLayer, arrays: list[np.ndarray], source: str) -> None:
        targets = layer.blobs()
        if len(arrays) != len(targets):
            origin = f"{source}: " if source else ""
            raise FormatError(f"{origin}layer '{name}': expected {len(targets)} blob(s), found {len(arrays)}")
        for index, (array, target) in enumerate(zip(arrays, targets)):
            expected, found = tuple(target.shape), tuple(np.shape(array))
            if found != expected and not legacy_shape_matches(found, expected):
                raise ShapeMismatchError(name, index, expected, found, source)
        with torch.no_grad():
            for index, (array, target) in enumerate(zip(arrays, targets)):
                values = np.asarray(array, dtype=np.float32).reshape(target.shape)
                if target.is_meta:
                    layer.set_blob(index, torch.from_numpy(values if values.flags.writeable else values.copy()))
                elif target.device.type == "cpu":
                    target.detach().numpy()[...] = values
                else:
                    target.copy_(torch.tensor(values))

    def blobs_numpy(self) -> dict[str, list[np.ndarray]]:
        """The learnable blobs as `write_caffemodel` takes them.

        Returns:
            Layer name -> its learnable blobs as read-only float32 arrays in Caffe shapes (CPU
            views, copies for blobs on another device), for layers that have any.
        """
        out = {}
        for name, layer in self._layers.items():
            arrays = []
            for blob in layer.blobs():
                array = blob.detach().cpu().numpy()
                array.flags.writeable = False
                arrays.append(array)
            if arrays:
                out[name] = arrays
        return out
