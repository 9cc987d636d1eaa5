"""The names of the 1000 ImageNet-1k classes, shipped with the package (no download)."""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources


@dataclasses.dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet class: its output index, WordNet synset id and names."""

    index: int
    synset: str
    names: str  # comma-separated WordNet lemmas, e.g. "tabby, tabby cat"

    @property
    def name(self) -> str:
        """The first of the class's names."""
        return self.names.split(",")[0]


@functools.cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in the order of an ImageNet classifier's outputs."""
    text = resources.files("captioner").joinpath("resources/imagenet_classes.txt").read_text()
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(rows)} classes, expected 1000")
    return tuple(ImageNetClass(i, synset, names) for i, (synset, names) in enumerate(rows))
