"""Where a staged backbone is cut: its whole depth, or its last stride-16 stage.

Show, Attend and Tell takes VGG's conv5_4, the last layer before the final pooling: a
stride-16 grid (14x14 at 224 px). Mobile backbones reach stride 32 in their last stages;
cutting them after the last stride-16 stage gives the paper's finer grid at the same input
size (8x8 instead of 4x4 at 128 px), with smaller receptive fields, for less compute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

FULL_STRIDE = 32
GRID_STRIDES = (16, FULL_STRIDE)
_STEM_STRIDE = 2

Stage = TypeVar("Stage")


def check_grid_stride(grid_stride: int, include_top: bool = False) -> None:
    """Refuses a stride the backbones cannot be cut at, or a cut network with a classifier."""
    if grid_stride not in GRID_STRIDES:
        raise ValueError(f"grid stride must be one of {GRID_STRIDES}, not {grid_stride!r}")
    if include_top and grid_stride != FULL_STRIDE:
        raise ValueError("the ImageNet classifier needs the whole network (grid stride 32)")


def stages_within(
    stages: Sequence[Stage], grid_stride: int, stride_of: Callable[[Stage], int]
) -> list[Stage]:
    """The leading stages (after a stride-2 stem) whose output stride stays <= `grid_stride`."""
    kept, stride = [], _STEM_STRIDE
    for stage in stages:
        stride *= stride_of(stage)
        if stride > grid_stride:
            break
        kept.append(stage)
    return kept
