"""An encoder's blocks, input to output, and unfreezing the top ones for fine-tuning."""

from __future__ import annotations

import keras


def layer_blocks(network: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The network's layers grouped into its blocks, input to output.

    A block is a run of consecutive layers whose names share the part before the first
    "_" (the offline ports name their layers `stem_*`, `block1a_*`, ..., `head_*`). The
    input layer belongs to no block.

    Returns:
        [(block name, its layers)], e.g. [("stem", [...]), ("block1a", [...]), ...].
    """
    blocks: list[tuple[str, list[keras.layers.Layer]]] = []
    for layer in network.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = layer.name.split("_", 1)[0]
        if blocks and blocks[-1][0] == name:
            blocks[-1][1].append(layer)
        else:
            blocks.append((name, [layer]))
    return blocks


def unfreeze_top_blocks(encoder: keras.layers.Layer, count: int) -> list[str]:
    """Makes the weights of the encoder's top `count` blocks trainable, all others frozen.

    Batch normalization layers stay frozen everywhere: a Keras 3 BatchNormalization with
    `trainable=False` normalises with its moving statistics and never updates them, even
    in a training call (the usual practice when fine-tuning with small batches).

    Args:
        encoder: an encoder with a `blocks()` method (the offline ports).
        count: the number of blocks to unfreeze, counted from the output.

    Returns:
        The names of the unfrozen blocks, input to output.

    Raises:
        ValueError: the encoder has no known blocks, or `count` is not in 1..number of blocks.
    """
    blocks = encoder_blocks(encoder)
    check_block_count(encoder, count)
    encoder.trainable = True  # sets every sublayer; the loop below freezes most again
    top = {name for name, _ in blocks[-count:]}
    for name, layers in blocks:
        for layer in layers:
            frozen = name not in top or isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = not frozen
    return [name for name, _ in blocks[-count:]]


def encoder_blocks(encoder: keras.layers.Layer) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The encoder's blocks (see `layer_blocks`).

    Raises:
        ValueError: the encoder has no `blocks()` method (e.g. small_cnn, or a
            keras.applications backbone).
    """
    if not hasattr(encoder, "blocks"):
        raise ValueError(
            f"{type(encoder).__name__} has no known blocks to fine-tune; fine-tuning supports "
            "the offline encoders efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 "
            "and mobilenet_v2_tv"
        )
    return encoder.blocks()


def check_block_count(encoder: keras.layers.Layer, count: int) -> None:
    """Refuses a number of blocks to fine-tune that the encoder does not have.

    Raises:
        ValueError: `count` is not in 1..number of blocks; names the encoder's blocks.
    """
    names = [name for name, _ in encoder_blocks(encoder)]
    label = getattr(encoder, "model", encoder).name
    if not 1 <= count <= len(names):
        raise ValueError(
            f"cannot fine-tune the top {count} blocks: the encoder {label} has "
            f"{len(names)} blocks ({names[0]}, {names[1]}, ..., {names[-1]}); choose 1 to "
            f"{len(names)}"
        )
