"""Reading user images from disk into RGB arrays."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageLoadError(Exception):
    """An image file that cannot be read; the message names the file and the reason."""


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image as (H, W, 3) uint8 RGB, with its EXIF orientation applied."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageLoadError(f"{path}: cannot decode image ({error})") from None


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, directories (their images, sorted) and glob patterns -> a list of paths.

    A pattern that matches nothing and a missing path are kept as given, so that loading
    them reports the problem by name.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item))
            paths.extend(Path(m) for m in matches) if matches else paths.append(path)
        else:
            paths.append(path)
    return paths
