"""Copying PyTorch state-dict weights into Keras layers, and finding offline weight files."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np

from captioner.models.torch_weights import TorchWeightsError, load_state_dict


class WeightsNotInstalledError(ValueError):
    """The pip package that ships an encoder's offline weights is not installed."""


def offline_weights_file(package: str, install: str, locate: Callable[[Path], Path]) -> Path:
    """The path of a weights file shipped inside an installed pip package.

    Args:
        package: the importable package name.
        install: the pip command that installs it, for the error message.
        locate: maps the package's folder to the weights file (it must not import torch).

    Raises:
        WeightsNotInstalledError: the package (or its file) is missing; names the pip command.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotInstalledError(
            f"the offline ImageNet weights come from the package {package}, which is not "
            f"installed; install it with `{install}`, or pass a local .pth file as the weights"
        )
    path = locate(Path(next(iter(spec.submodule_search_locations))))
    if not path.is_file():
        raise WeightsNotInstalledError(f"{path}: weights file missing; reinstall with `{install}`")
    return path


def resolve_weights(weights: str | Path | None, offline_file: Callable[[], Path]) -> Path | None:
    """The weights file an encoder loads: None, the offline file for "imagenet", or a path.

    Checked before the network is built, so that a bad choice fails at once.

    Raises:
        WeightsNotInstalledError: "imagenet" without its pip package.
        TorchWeightsError: a path that is not a file.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        return offline_file()
    if not Path(weights).is_file():
        raise TorchWeightsError(f"{weights}: no such file")
    return Path(weights)


def _to_keras(layer: keras.layers.Layer, prefix: str, tensors: Mapping[str, np.ndarray]):
    """The Keras weights of `layer` from the torch tensors named `prefix.*`."""

    def get(name: str) -> np.ndarray:
        return tensors[f"{prefix}.{name}"]

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        values = [get("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    elif isinstance(layer, keras.layers.Conv2D):
        values = [get("weight").transpose(2, 3, 1, 0)]  # (O, I, kh, kw) -> (kh, kw, I, O)
    elif isinstance(layer, keras.layers.Dense):
        values = [get("weight").T]  # (out, in) -> (in, out)
    elif isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    else:
        raise TypeError(f"no torch weight mapping for {type(layer).__name__}")
    if layer.use_bias:
        values.append(get("bias"))
    return values


def load_torch_weights(
    model: keras.Model, path: str | Path, layer_prefixes: Mapping[str, str]
) -> None:
    """Sets `model`'s weights from a PyTorch state-dict file.

    Args:
        model: the Keras port.
        path: the .pth file (zip or legacy layout; read without torch).
        layer_prefixes: {Keras layer name: torch module name} for every layer with weights.
            Torch tensors of modules not listed (e.g. a classifier the port leaves out) and
            `num_batches_tracked` counters are ignored.

    Raises:
        ValueError: a tensor is missing or has the wrong shape; names the file and tensor.
    """
    tensors = load_state_dict(path)
    for layer_name, prefix in layer_prefixes.items():
        layer = model.get_layer(layer_name)
        try:
            values = _to_keras(layer, prefix, tensors)
        except KeyError as error:
            raise ValueError(
                f"{path}: no tensor {error.args[0]} for layer {layer_name} "
                "(wrong file for this encoder?)"
            ) from None
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(v.shape) for v in values]
        if expected != found:
            raise ValueError(
                f"{path}: tensors {prefix}.* have shapes {found}, layer {layer_name} needs "
                f"{expected} (wrong file for this encoder?)"
            )
        layer.set_weights([v.astype(np.float32) for v in values])
