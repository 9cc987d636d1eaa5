"""`keras.applications` backbones as grid encoders."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

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

# Where Keras downloads ImageNet weights from, and the names it caches headless weights under.
WEIGHTS_HOST = "storage.googleapis.com"
_CACHED_NO_TOP = {
    **{name: f"{name}_weights_*notop.h5" for name in ("resnet50", "resnet101", "resnet152")},
    **{name: f"{name}_weights_*notop.h5" for name in ("inception_v3", "vgg16", "vgg19")},
    "mobilenet_v2": "mobilenet_v2_weights_*_no_top.h5",
    "mobilenet_v3_small": "weights_mobilenet_v3_small_*no_top*.h5",
    "mobilenet_v3_large": "weights_mobilenet_v3_large_*no_top*.h5",
    **{f"efficientnet_b{i}": f"efficientnetb{i}_notop.h5" for i in range(8)},
    **{f"convnext_{s}": f"convnext_{s}_notop.h5" for s in ("tiny", "small", "base")},
}
OFFLINE_ALTERNATIVES = "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, mobilenet_v2_tv"


class ImageNetWeightsUnavailableError(ValueError):
    """`weights="imagenet"` for a backbone whose weights are neither cached nor downloadable."""


def keras_weights_cached(backbone: str) -> bool:
    """Whether Keras already holds `backbone`'s headless ImageNet weights in its cache."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    folders = [keras_home / "models", Path(tempfile.gettempdir()) / ".keras" / "models"]
    return any(any(folder.glob(_CACHED_NO_TOP[backbone])) for folder in folders)


def can_connect(host: str = WEIGHTS_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to `host` opens within `timeout` seconds (name lookup too)."""
    result: list[bool] = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # getaddrinfo ignores timeouts
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def check_imagenet_weights_available(backbone: str) -> None:
    """Fails at once, before Keras tries a download, when `backbone`'s weights cannot come.

    Raises:
        ImageNetWeightsUnavailableError: not in the Keras cache and the download host is
            unreachable; the message names the offline encoders and the local-file option.
    """
    if keras_weights_cached(backbone) or can_connect():
        return
    raise ImageNetWeightsUnavailableError(
        f"the ImageNet weights of {backbone} are not in the Keras cache and {WEIGHTS_HOST} "
        f"cannot be reached (offline?). Use an encoder with offline weights "
        f"({OFFLINE_ALTERNATIVES}), or pass a local Keras weights file for {backbone} with "
        "--encoder-weights PATH."
    )


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
        weights: None (random), "imagenet" (downloaded by Keras on first use; offline, it
            must already be in the Keras cache) or the path of a local weights file. A saved
            captioning model carries the weights, so its config always says None.
    """

    def __init__(self, backbone="resnet50", image_size=224, weights=None, **kwargs):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        self.backbone = backbone
        self.image_size = image_size
        constructor_name, self.mode = BACKBONES[backbone]
        constructor = getattr(keras.applications, constructor_name)
        if weights == "imagenet":
            check_imagenet_weights_available(backbone)
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
                    "file with --encoder-weights PATH, or use an encoder with offline weights "
                    f"({OFFLINE_ALTERNATIVES})."
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
