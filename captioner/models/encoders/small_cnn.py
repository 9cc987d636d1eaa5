"""A small convolutional encoder, trained from scratch with the decoder."""

from __future__ import annotations

import keras
from keras import layers, ops

from captioner.models.encoders.coordinates import append_coordinates


@keras.saving.register_keras_serializable(package="captioner")
class SmallCNN(keras.layers.Layer):
    """A patchifying stem, then conv/batch-norm/ReLU stages that each halve the resolution.

    The stem (a `stem_stride` x `stem_stride` convolution with the same stride) keeps the
    costly high-resolution layers out of the network: on CPUs it trains about 1.5x faster
    than a stack of stride-2 3x3 convolutions with the same grid. Two coordinate channels
    (x and y in [-1, 1]) are appended to the input so that every grid cell knows where it
    is, so that it can tell "to the left of" from "to the right of".

    Args:
        stem_filters: channels of the stem.
        stem_stride: side of the stem's patches.
        filters: channels of each later stage.
        convs_per_stage: 3x3 convolutions of each stage (the first one has stride 2).
        The grid is the input size / (stem_stride * 2**len(filters)).
    """

    def __init__(
        self,
        stem_filters=64,
        stem_stride=4,
        filters=(96, 128),
        convs_per_stage=(2, 2),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(filters) != len(convs_per_stage):
            raise ValueError("filters and convs_per_stage need one entry per stage")
        self.stem_filters = stem_filters
        self.stem_stride = stem_stride
        self.filters = tuple(filters)
        self.convs_per_stage = tuple(convs_per_stage)
        # (channels, kernel, stride) of every convolution, stem first.
        specs = [(stem_filters, stem_stride, stem_stride)]
        for width, count in zip(self.filters, self.convs_per_stage):
            specs += [(width, 3, 2)] + [(width, 3, 1)] * (count - 1)
        self.convs, self.norms = [], []
        for index, (width, kernel, stride) in enumerate(specs):
            self.convs.append(
                layers.Conv2D(
                    width,
                    kernel,
                    strides=stride,
                    padding="same",
                    use_bias=False,
                    name=f"conv{index}",
                )
            )
            # momentum 0.9: the moving statistics must be usable after a few hundred steps
            self.norms.append(layers.BatchNormalization(momentum=0.9, name=f"conv{index}_bn"))

    def call(self, images, training=False):
        x = ops.cast(images, self.compute_dtype) / 127.5 - 1.0  # (B, H, W, 3)
        x = append_coordinates(x)  # (B, H, W, 5)
        for conv, norm in zip(self.convs, self.norms):
            x = ops.relu(norm(conv(x), training=training))
        return x  # (B, gh, gw, filters[-1])

    def compute_output_shape(self, input_shape):
        scale = self.stem_stride * 2 ** len(self.filters)
        height = None if input_shape[1] is None else -(-input_shape[1] // scale)
        width = None if input_shape[2] is None else -(-input_shape[2] // scale)
        return (input_shape[0], height, width, self.filters[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            stem_filters=self.stem_filters,
            stem_stride=self.stem_stride,
            filters=list(self.filters),
            convs_per_stage=list(self.convs_per_stage),
        )
        return config
