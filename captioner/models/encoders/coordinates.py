"""Grid coordinates as extra feature channels."""

from __future__ import annotations

from keras import ops


def append_coordinates(x):
    """(B, H, W, C) -> (B, H, W, C + 2): every position's x and y in [-1, 1] appended.

    Captions that say "to the left of" need to know where a grid cell is; with its
    coordinates among its features, attention can also look "further right" directly.
    """
    batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
    xs = ops.linspace(-1.0, 1.0, width)
    ys = ops.linspace(-1.0, 1.0, height)
    grid = ops.stack(ops.meshgrid(xs, ys, indexing="xy"), axis=-1)  # (H, W, 2)
    grid = ops.broadcast_to(ops.cast(grid, x.dtype)[None], (batch, height, width, 2))
    return ops.concatenate([x, grid], axis=-1)
