"""`keras.applications` backbones as grid encoders."""

from __future__ import annotations

import keras
from keras import ops

# name -> (constructor name in keras.applications, preprocessing mode).
# Modes: "caffe" (BGR, ImageNet means), "tf" (scale to [-1, 1]), "none" (inside the model).
BACKBONES = {
    "resnet50": ("ResNet50", "caffe"),
    "resnet101": ("ResNet101", "caffe"),
    "resnet152": ("ResNet152", "caffe"),
    "inception_v3": ("InceptionV3", "tf"),
    "vgg16": ("VGG16", "caffe"),
    "vgg19": ("VGG19", "caffe"),
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "mobilenet_v3_small": ("MobileNetV3Small", "none"),
    "mobilenet_v3_large": ("MobileNetV3Large", "none"),
    **{f"efficientnet_b{i}": (f"EfficientNetB{i}", "none") for i in range(8)},
    **{f"convnext_{s}": (f"ConvNeXt{s.title()}", "none") for s in ("tiny", "small", "base")},
}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _preprocess(images, mode: str, dtype):
    x = ops.cast(images, dtype)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return x[..., ::-1] - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype)
    return x


@keras.saving.register_keras_serializable(package="captioner")
class ApplicationsEncoder(keras.layers.Layer):
    """A headless `keras.applications` backbone giving its last conv feature map.

    Args:
        backbone: a key of `BACKBONES`.
        image_size: input side in pixels; the grid follows from the backbone.
        weights: None (random), "imagenet" (downloaded by Keras on first use) or the path
            of a local weights file. A saved captioning model carries the weights, so its
            config always says None.
    """

    def __init__(self, backbone="resnet50", image_size=224, weights=None, **kwargs):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        self.backbone = backbone
        self.image_size = image_size
        constructor_name, self.mode = BACKBONES[backbone]
        constructor = getattr(keras.applications, constructor_name)
        options = {}
        if self.mode == "none" and backbone.startswith("mobilenet_v3"):
            options["include_preprocessing"] = True
        try:
            self.model = constructor(
                include_top=False,
                weights=weights,
                input_shape=(image_size, image_size, 3),
                **options,
            )
        except Exception as error:
            if weights == "imagenet":
                raise RuntimeError(
                    f"could not get ImageNet weights for {backbone} ({error}). Keras downloads "
                    "them on first use, which needs internet; offline, pass a local weights "
                    "file with --encoder-weights PATH, or use the small_cnn encoder."
                ) from error
            raise

    def call(self, images, training=False):
        return self.model(_preprocess(images, self.mode, self.compute_dtype), training=training)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone, image_size=self.image_size, weights=None)
        return config
