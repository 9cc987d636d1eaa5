"""Image encoders: images (B, S, S, 3) uint8 -> feature grids (B, gh, gw, D)."""

from __future__ import annotations

import keras

from captioner.encoders.applications import BACKBONES, ApplicationsEncoder
from captioner.encoders.small_cnn import SmallCNN

ENCODERS = ("small_cnn", *BACKBONES)


def build_encoder(name: str, image_size: int, weights: str | None = None) -> keras.layers.Layer:
    """The encoder called `name` (see `ENCODERS`) for square inputs of `image_size` pixels."""
    if name == "small_cnn":
        if weights is not None:
            raise ValueError("small_cnn has no pretrained weights; leave --encoder-weights unset")
        return SmallCNN(name="encoder")
    if name in BACKBONES:
        return ApplicationsEncoder(name, image_size=image_size, weights=weights, name="encoder")
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")


def is_pretrained(name: str) -> bool:
    """Whether an encoder is a pretrained backbone (frozen by default) or trained from scratch."""
    return name != "small_cnn"


__all__ = ["ENCODERS", "ApplicationsEncoder", "SmallCNN", "build_encoder", "is_pretrained"]
