"""Image encoders: images (B, S, S, 3) uint8 -> feature grids (B, gh, gw, D)."""

from __future__ import annotations

import keras

from captioner.models.encoders.applications import BACKBONES, ApplicationsEncoder
from captioner.models.encoders.efficientnet_lite import VARIANTS as EFFICIENTNET_LITE_VARIANTS
from captioner.models.encoders.efficientnet_lite import EfficientNetLiteEncoder
from captioner.models.encoders.grid_stride import FULL_STRIDE
from captioner.models.encoders.mobilenet_v2_tv import NATIVE_SIZE as MOBILENET_V2_TV_SIZE
from captioner.models.encoders.mobilenet_v2_tv import TorchvisionMobileNetV2Encoder
from captioner.models.encoders.small_cnn import SmallCNN

# Pretrained encoders whose ImageNet weights ship in pip packages (no download at run time).
OFFLINE_ENCODERS = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "mobilenet_v2_tv",
)
ENCODERS = ("small_cnn", *OFFLINE_ENCODERS, *BACKBONES)


def build_encoder(
    name: str,
    image_size: int | None,
    weights: str | None = None,
    include_top: bool = False,
    grid_stride: int = FULL_STRIDE,
) -> keras.layers.Layer:
    """The encoder called `name` (see `ENCODERS`) for square inputs of `image_size` pixels.

    Args:
        name: the encoder's name.
        image_size: input side in pixels; None for an offline encoder's native size.
        weights: None (random), "imagenet" or the path of a local weights file.
        include_top: give ImageNet logits instead of the grid (offline encoders only).
        grid_stride: 32, or 16 to cut an offline encoder after its last stride-16 stage.
    """
    if include_top and name not in OFFLINE_ENCODERS:
        raise ValueError(
            f"{name} has no ImageNet classifier here; use one of {', '.join(OFFLINE_ENCODERS)}"
        )
    if grid_stride != FULL_STRIDE and name not in OFFLINE_ENCODERS:
        raise ValueError(
            f"grid stride {grid_stride} needs an encoder that can be cut there "
            f"({', '.join(OFFLINE_ENCODERS)}), not {name}; use grid stride {FULL_STRIDE}"
        )
    if name == "small_cnn":
        if weights is not None:
            raise ValueError("small_cnn has no pretrained weights; leave --encoder-weights unset")
        return SmallCNN(name="encoder")
    if name.startswith("efficientnet_lite") and name in OFFLINE_ENCODERS:
        variant = name.removeprefix("efficientnet_")
        return EfficientNetLiteEncoder(
            variant, image_size, weights, include_top, grid_stride, name="encoder"
        )
    if name == "mobilenet_v2_tv":
        return TorchvisionMobileNetV2Encoder(
            image_size, weights, include_top, grid_stride, name="encoder"
        )
    if name in BACKBONES:
        return ApplicationsEncoder(name, image_size=image_size, weights=weights, name="encoder")
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")


def native_image_size(name: str) -> int:
    """The input side an encoder was trained at (small_cnn: the synthetic images' 128 px)."""
    if name.startswith("efficientnet_lite") and name in OFFLINE_ENCODERS:
        return EFFICIENTNET_LITE_VARIANTS[name.removeprefix("efficientnet_")][2]
    if name == "mobilenet_v2_tv":
        return MOBILENET_V2_TV_SIZE
    return {"small_cnn": 128, "inception_v3": 299}.get(name, 224)


def is_pretrained(name: str) -> bool:
    """Whether an encoder is a pretrained backbone (frozen by default) or trained from scratch."""
    return name != "small_cnn"


__all__ = [
    "ENCODERS",
    "OFFLINE_ENCODERS",
    "ApplicationsEncoder",
    "EfficientNetLiteEncoder",
    "SmallCNN",
    "TorchvisionMobileNetV2Encoder",
    "build_encoder",
    "is_pretrained",
    "native_image_size",
]
