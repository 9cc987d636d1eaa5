"""Classifying image files with an offline encoder's ImageNet head (checks its weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np
from keras import ops
from PIL import Image

from captioner.data.images import ImageLoadError, load_image
from captioner.models.imagenet_classes import ImageNetClass, imagenet_classes


@dataclasses.dataclass
class Classification:
    """The outcome for one file: the top classes with their probabilities, or an error."""

    path: Path
    top: list[tuple[ImageNetClass, float]] = dataclasses.field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": str(self.path), "error": self.error}
        return {
            "image": str(self.path),
            "top": [
                {"index": c.index, "synset": c.synset, "names": c.names, "probability": p}
                for c, p in self.top
            ],
        }


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> its centre square resized to (size, size, 3), bicubic.

    The usual ImageNet evaluation view; the reference photos of the tests were made so.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC))


def classify_files(
    classifier: keras.layers.Layer,
    paths: Sequence[Path],
    *,
    top_k: int = 5,
    batch_size: int = 16,
) -> Iterator[Classification]:
    """Classifies image files batch by batch, yielding one result per path in order.

    Args:
        classifier: an encoder built with `include_top=True` (uint8 images -> 1000 logits),
            with an `image_size` attribute.
        paths: image files.
        top_k: how many classes to report per image.
        batch_size: images per forward pass.

    A file that cannot be read gives a result with `error` set; the others go on.
    """
    classes = imagenet_classes()
    for start in range(0, len(paths), batch_size):
        results = [Classification(path) for path in paths[start : start + batch_size]]
        images = {}
        for i, result in enumerate(results):
            try:
                images[i] = center_square(load_image(result.path), classifier.image_size)
            except ImageLoadError as error:
                result.error = str(error)
        if images:
            logits = classifier(np.stack(list(images.values())))  # (n, 1000)
            probabilities = ops.convert_to_numpy(ops.softmax(logits, axis=-1))
            for i, row in zip(images, probabilities):
                best = np.argsort(-row)[:top_k]
                results[i].top = [(classes[k], float(row[k])) for k in best]
        yield from results
