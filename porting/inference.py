"""A CPU inference path for `CaffeNet`: the same layers, run as oneDNN executes them best.

Convolutions run through oneDNN on channels-last maps with their weights reordered once
into oneDNN's own layout (for FCN's fc6, a 400 MB weight, the per-call reorder is a
tenth of the layer), and an in-place ReLU that directly follows a convolution is fused
into it as a post-op, which saves a pass over the largest maps. A Deconvolution with a
diagonal weight (bilinear upsampling) runs grouped, without its zero cross-channel terms.
Every other layer is the plain one and the executor is `CaffeNet`'s, so Caffe's
semantics are unchanged; only the summation order inside a convolution differs (about
1e-6 relative in fp32).

The prepacked kernels are torch's private oneDNN operators; this module is the only
place in the project that calls private torch API. Each use sits behind a feature check
(`onednn_kernels_available`), and where a torch build lacks them the same plan runs on
public `torch.nn.functional` kernels (channels-last convolution, ReLU applied in place).

`InferenceNet(net, dtype=torch.bfloat16)` runs a bfloat16 copy of the net (inputs cast
in, outputs cast back to the caller's dtype): fast where oneDNN has native bf16 kernels
(AVX512-BF16, AMX), emulated and slower than fp32 elsewhere. fp32 stays the default and
the exact path.

Weights are a snapshot: build `InferenceNet` again after changing them.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import logging
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.layers.activation import ReLU
from porting.layers.convolution import Convolution, Deconvolution
from porting.net import CaffeNet, Kernel, Step
from porting.numerics import set_fp32_precision

Shape = tuple[int, ...]

log = logging.getLogger(__name__)

#: glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: dtypes InferenceNet computes in
DTYPES = (torch.float32, torch.bfloat16)


def onednn_kernels_available() -> bool:
    """Whether this torch build has the private oneDNN operators the packed kernels call."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


def native_bf16_available() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 or AMX class)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None) if onednn_kernels_available() else None
    return bool(check is not None and check())


def retain_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks up to `limit_bytes` for reuse (process-wide).

    By default every block over 32 MB is mmap'ed fresh and unmapped on free, so each
    forward page-faults its ~1 GB of feature maps anew (about 8% of an FCN-8s forward
    on one core); ONNX Runtime and OpenCV reuse their own arenas. This is the allocator
    half of PyTorch's CPU tuning advice (jemalloc/tcmalloc) without preloading a library.
    The process keeps its peak memory instead of returning it. False where libc has no
    `mallopt` (not glibc).
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    limit = ctypes.c_int(min(limit_bytes, 2**31 - 1))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))
    )


class PackedConvolution:
    """One Convolution layer as a oneDNN kernel with a prepacked weight and an optional fused ReLU."""

    def __init__(self, layer: Convolution, relu: bool) -> None:
        self.layer = layer
        self.args = ([*layer.pad], [*layer.stride], [*layer.dilation], layer.group)
        self.post_op = "relu" if relu else "none"
        self.weight: Tensor | None = None
        self.bias = layer.blob(1).detach() if layer.bias_term else None

    def _pack(self, input_shape: Shape) -> Tensor:
        """oneDNN picks the weight layout for an input size; any other size still runs."""
        weight = self.layer.blob(0).detach().to_mkldnn()
        return torch._C._nn.mkldnn_reorder_conv2d_weight(weight, *self.args, list(input_shape))  # type: ignore[call-arg]  # stub lacks input_size

    def __call__(self, *bottoms: Tensor) -> list[Tensor]:
        tops = []
        for x in bottoms:
            self.layer.check_input(x)
            x = x.contiguous(memory_format=torch.channels_last)
            if self.weight is None:
                self.weight = self._pack(tuple(x.shape))
            tops.append(
                torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, self.post_op, [], "")
            )
        return tops


class ChannelsLastConvolution:
    """The public fallback of `PackedConvolution`: `F.conv2d` on channels-last maps with a
    channels-last weight, and the fused ReLU applied in place on its output."""

    def __init__(self, layer: Convolution, relu: bool) -> None:
        self.layer = layer
        self.relu = relu
        self.weight = layer.blob(0).detach().contiguous(memory_format=torch.channels_last)
        self.bias = layer.blob(1).detach() if layer.bias_term else None

    def __call__(self, *bottoms: Tensor) -> list[Tensor]:
        tops = []
        layer = self.layer
        for x in bottoms:
            layer.check_input(x)
            x = x.contiguous(memory_format=torch.channels_last)
            top = F.conv2d(x, self.weight, self.bias, layer.stride, layer.pad, layer.dilation, layer.group)
            tops.append(top.relu_() if self.relu else top)
        return tops


class PointwiseConvolution:
    """A 1x1 Convolution (stride 1, no pad, one group) as one matrix product per image on
    channels-last maps: (H*W, C) x (C, K) + bias, the fused ReLU in place after. oneDNN's
    direct kernel is far slower for FCN's fc7 (4096 -> 4096 channels on a small map) than the
    GEMM it amounts to."""

    def __init__(self, layer: Convolution, relu: bool) -> None:
        self.layer = layer
        self.relu = relu
        self.weight_t = layer.blob(0).detach().flatten(1).t()  # (C, K) view of the (K, C, 1, 1) weight
        self.bias = layer.blob(1).detach() if layer.bias_term else None

    @staticmethod
    def fits(layer: Convolution) -> bool:
        """Whether the layer is a plain 1x1 convolution."""
        return (
            tuple(layer.kernel) == (1, 1)
            and tuple(layer.stride) == (1, 1)
            and tuple(layer.pad) == (0, 0)
            and layer.group == 1
        )

    def __call__(self, *bottoms: Tensor) -> list[Tensor]:
        tops = []
        for x in bottoms:
            self.layer.check_input(x)
            n, c, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # free for channels-last maps
            top = rows @ self.weight_t if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
            top = top.view(n, h, w, -1).permute(0, 3, 1, 2)
            tops.append(top.relu_() if self.relu else top)
        return tops


class DiagonalDeconvolution:
    """A Deconvolution whose weight maps each channel only to itself (FCN's bilinear
    upsampling) run as a grouped one: the same sums without the C - 1 zero terms each."""

    def __init__(self, layer: Deconvolution, diagonal: Tensor) -> None:
        self.layer = layer
        self.weight = diagonal
        self.bias = layer.blob(1).detach() if layer.bias_term else None

    @staticmethod
    def diagonal_of(layer: Deconvolution) -> Tensor | None:
        """The (C, 1, kh, kw) diagonal of a (C, C, kh, kw) weight that is zero elsewhere, else None."""
        weight = layer.blob(0).detach()
        if layer.group != 1 or weight.shape[0] != weight.shape[1]:
            return None
        channels = torch.arange(weight.shape[0])
        diagonal = weight[channels, channels].unsqueeze(1).contiguous()
        off = weight.clone()
        off[channels, channels] = 0
        return None if off.any() else diagonal

    def __call__(self, *bottoms: Tensor) -> list[Tensor]:
        tops = []
        for x in bottoms:
            self.layer.check_input(x)
            x = x.contiguous(memory_format=torch.channels_last)
            layer = self.layer
            tops.append(
                F.conv_transpose2d(x, self.weight, self.bias, layer.stride, layer.pad, 0, x.shape[1], layer.dilation)
            )
        return tops


class InferenceNet(nn.Module):
    """`net` for CPU inference: same inputs and outputs as `net(...)`, no autograd.

    Weights are packed on the first call, for its input size; any other size the net
    accepts runs too. Inputs on other devices run the plain layers. Building one asks for
    IEEE fp32 convolutions and matmuls (`porting.numerics`), TF32 only with `tf32=True`.

    Args:
        net: the net to run; with a dtype other than float32 a converted copy is kept.
        dtype: torch.float32 (default, the exact path) or torch.bfloat16.
        onednn: use oneDNN's prepacked kernels (True), the public fallback (False), or
            decide by `onednn_kernels_available()` and, for bf16, by `native_bf16_available()` (None).
        tf32: allow TF32 (and oneDNN's reduced fp32) instead of IEEE fp32.
    Raises:
        ValueError: for a dtype other than float32 or bfloat16, or `onednn=True` where
            this torch lacks the kernels.
    """

    def __init__(
        self, net: CaffeNet, *, dtype: torch.dtype = torch.float32, onednn: bool | None = None, tf32: bool = False
    ) -> None:
        super().__init__()
        set_fp32_precision(tf32)
        if dtype not in DTYPES:
            raise ValueError(f"InferenceNet computes in {', '.join(map(str, DTYPES))}, not {dtype}")
        if onednn and not onednn_kernels_available():
            raise ValueError("this torch build lacks the oneDNN kernels (torch.ops.mkldnn._convolution_pointwise)")
        if onednn is None:
            onednn = onednn_kernels_available() and (dtype == torch.float32 or native_bf16_available())
        if dtype != torch.float32 and not native_bf16_available():
            log.warning(
                "this CPU has no native bf16 convolutions (AVX512-BF16/AMX): bf16 runs emulated, slower than fp32"
            )
        self.dtype = dtype
        self.onednn = onednn
        self.net = net if dtype == torch.float32 else copy.deepcopy(net).to(dtype)
        self.kernels: dict[str, Kernel | None] = self._plan(self.net, dtype, onednn)

    @staticmethod
    def _plan(net: CaffeNet, dtype: torch.dtype, onednn: bool) -> dict[str, Kernel | None]:
        kernels: dict[str, Kernel | None] = {}
        steps = net.steps
        convolution = PackedConvolution if onednn else ChannelsLastConvolution
        for index, step in enumerate(steps):
            weight = step.layer.blob(0) if type(step.layer) in (Convolution, Deconvolution) else None
            if weight is None or weight.device.type != "cpu" or weight.dtype != dtype or len(step.tops) != 1:
                continue
            if type(step.layer) is Deconvolution:
                diagonal = DiagonalDeconvolution.diagonal_of(step.layer)
                if diagonal is not None:
                    kernels[step.name] = DiagonalDeconvolution(step.layer, diagonal)
                continue
            relu = _fusable_relu(steps, index)
            layer = cast(Convolution, step.layer)
            kind = PointwiseConvolution if PointwiseConvolution.fits(layer) else convolution
            kernels[step.name] = kind(layer, relu is not None)
            if relu is not None:
                kernels[relu.name] = None
        return kernels

    @torch.no_grad()
    def forward(self, *args: Tensor, **kwargs: Tensor) -> dict[str, Tensor]:
        """{output blob: tensor}, as `CaffeNet.forward`, in contiguous (NCHW) memory and the inputs' float dtype."""
        given = [*args, *kwargs.values()]
        returned = next((t.dtype for t in given if t.is_floating_point()), torch.float32)
        on_cpu = all(t.device.type == "cpu" for t in given)
        args = tuple(self._cast(t) for t in args)
        kwargs = {name: self._cast(t) for name, t in kwargs.items()}
        outputs = self.net.forward_with(self.kernels if on_cpu else {}, *args, **kwargs)
        return {name: (t.to(returned) if t.is_floating_point() else t).contiguous() for name, t in outputs.items()}

    def _cast(self, tensor: Tensor) -> Tensor:
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor


def _fusable_relu(steps: tuple[Step, ...], index: int) -> Step | None:
    """The ReLU (slope 0) that overwrites step `index`'s top in place before anything else
    reads it: running it inside the convolution then changes no value anyone sees."""
    top = steps[index].tops[0]
    for step in steps[index + 1 :]:
        if top in step.bottoms:
            plain = isinstance(step.layer, ReLU) and step.layer.negative_slope == 0
            return step if plain and step.in_place else None
        if top in step.tops:
            return None
    return None
