"""Caffe's image input convention as a transform: what `weights.transforms()` is in torchvision.

Every released FCN reads its image as Caffe's data layers prepared it: BGR channel order,
0..255 float32, the per-channel mean (B, G, R) subtracted, NCHW. `CaffeTransform(mean)`
makes that from a picture as Python users hold one:

- a PIL image (any mode PIL converts to RGB: grayscale, palette, RGBA, CMYK);
- a numpy array, H x W x 3, uint8;
- a torch uint8 tensor, 3 x H x W (torchvision's `read_image`, `PILToTensor`), H x W x 3,
  or a batch N x 3 x H x W.

Arrays and tensors are RGB unless the caller says `order="BGR"` (OpenCV's `imread`).
Input whose scale cannot be known is refused, never guessed: a float image may be 0..1
(torchvision's `ToTensor`) or 0..255, and taking one for the other gives wrong labels
without any error, so floats get a `FormatError` saying what to pass instead; so do other
integer types, channel counts other than 3, and a tensor whose layout is ambiguous.
`to_input` is the one place the arithmetic happens (the datasets use it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from porting.errors import FormatError

#: channel orders a caller may declare for arrays and tensors
ORDERS = ("RGB", "BGR")
#: what the transform takes, for messages
ACCEPTED = "a PIL image, an HxWx3 uint8 array, or a uint8 tensor (3xHxW, HxWx3 or Nx3xHxW)"

ImageLike = Image.Image | np.ndarray | torch.Tensor


def rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image as H x W x 3 uint8 RGB (grayscale, palette, RGBA and CMYK images converted by PIL)."""
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def to_input(rgb: np.ndarray, mean: Sequence[float]) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 3 x H x W float32 BGR minus `mean` (B, G, R).

    The subtraction runs in float64 and rounds once to float32, as numpy does in the
    authors' data layers (a float32 image minus a float64 mean array).
    """
    if len(mean) != 3:
        raise ValueError(f"an RGB image needs a mean of 3 values (B, G, R), got {len(mean)}")
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)
    centered = bgr.astype(np.float64) - np.asarray(mean, dtype=np.float64)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(centered, dtype=np.float32))


def _check_uint8(image: np.ndarray | torch.Tensor) -> None:
    """Refuse any pixel type but uint8; a float image gets its value range and how to convert it."""
    if isinstance(image, torch.Tensor):
        uint8, floating, empty = image.dtype == torch.uint8, image.dtype.is_floating_point, image.numel() == 0
    else:
        uint8, floating, empty = image.dtype == np.uint8, bool(np.issubdtype(image.dtype, np.floating)), image.size == 0
    if uint8:
        return
    if not floating:
        raise FormatError(f"image of dtype {image.dtype}: the model reads 8-bit pixels, 0..255; pass {ACCEPTED}")
    seen = "" if empty else f" (values {float(image.min()):g}..{float(image.max()):g})"
    raise FormatError(
        f"image of dtype {image.dtype}{seen}: the model reads 8-bit pixels, 0..255, and a float image's scale "
        f"(0..1 or 0..255) cannot be told; pass {ACCEPTED}; a 0..1 float tensor x as (x * 255).round().to(torch.uint8)"
    )


def _tensor_hwc(image: torch.Tensor) -> list[np.ndarray]:
    """A uint8 tensor as H x W x 3 arrays (one per image of a batch)."""
    shape = tuple(image.shape)
    image = image.detach().cpu()
    if image.dim() == 4:
        if shape[1] != 3:
            raise FormatError(f"image batch of shape {shape}: expected N x 3 x H x W")
        return [frame.permute(1, 2, 0).numpy() for frame in image]
    if image.dim() == 3:
        chw, hwc = shape[0] == 3, shape[2] == 3
        if chw and hwc:
            raise FormatError(
                f"image tensor of shape {shape}: both 3 x H x W and H x W x 3 read it; pass a PIL image or an HxWx3 array"
            )
        if chw:
            return [image.permute(1, 2, 0).numpy()]
        if hwc:
            return [image.numpy()]
    raise FormatError(f"image tensor of shape {shape}: expected 3 x H x W, H x W x 3 or N x 3 x H x W (3 channels)")


@dataclass(frozen=True)
class CaffeTransform:
    """An image -> the net's input: BGR, 0..255 float32, `mean` (B, G, R) subtracted, N x 3 x H x W.

    Calling it returns 1 x 3 x H x W for one image, N x 3 x H x W for a batch tensor; the
    image's size is kept (FCNs take any size).
    """

    mean: tuple[float, ...]

    def __call__(self, image: ImageLike, order: str = "RGB") -> torch.Tensor:
        """Prepare `image` as the model was trained.

        Args:
            image: a PIL image (its own mode says its channels), or a uint8 array (H x W x 3) or
                tensor (3 x H x W, H x W x 3, N x 3 x H x W) whose channels are in `order`.
            order: "RGB" (PIL, torchvision, matplotlib) or "BGR" (OpenCV) for arrays and tensors.

        Returns:
            float32 N x 3 x H x W on the CPU.

        Raises:
            FormatError: a float or non-uint8 image, not 3 channels, an ambiguous tensor layout,
                an unknown `order`, or another type of object.
        """
        if order not in ORDERS:
            raise FormatError(f"channel order {order!r}: expected one of {', '.join(ORDERS)}")
        if isinstance(image, Image.Image):
            if order != "RGB":
                raise FormatError(
                    f"a PIL image says its own channels (mode {image.mode}); order={order!r} is for arrays"
                )
            frames = [rgb_array(image)]
        elif isinstance(image, np.ndarray):
            _check_uint8(image)
            if image.ndim != 3 or image.shape[2] != 3:
                raise FormatError(f"image array of shape {image.shape}: expected H x W x 3 (RGB)")
            frames = [image]
        elif isinstance(image, torch.Tensor):
            _check_uint8(image)
            frames = _tensor_hwc(image)
        else:
            raise FormatError(f"cannot read an image from a {type(image).__name__}; pass {ACCEPTED}")
        if order == "BGR":
            frames = [frame[:, :, ::-1] for frame in frames]
        return torch.stack([to_input(frame, self.mean) for frame in frames])
