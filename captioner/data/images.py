"""Reading user images from disk into RGB arrays: the one loader for every command."""

from __future__ import annotations

import glob
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.errors import ImageLoadError

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageLoadError", "expand_inputs", "load_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Images whose header claims more pixels are refused before decoding (decompression bombs).
# Pillow refuses on its own above 2 * Image.MAX_IMAGE_PIXELS (about 179 million pixels).
DEFAULT_MAX_PIXELS = 64 * 2**20

# Pillow warns about corrupt metadata and large images. Here an image either loads or is
# refused with a message, and the pixel limit is ours, so these warnings are noise.
# (A module-wide filter: warnings.catch_warnings is not thread-safe, and tf.data calls the
# loader from several threads.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WHITE = (255, 255, 255)
_SIGNATURES = {
    "PNG": (b"\x89PNG",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WebP": (b"RIFF",),
    "BMP": (b"BM",),
    "PDF document": (b"%PDF",),
    "zip archive": (b"PK\x03\x04",),
}
_IMAGE_KINDS = ("PNG", "JPEG", "GIF", "TIFF", "WebP", "BMP")


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image as (H, W, 3) uint8 RGB.

    Any format Pillow reads, whatever the file's extension. The EXIF orientation is
    applied; animations give their first frame; transparent pixels are laid on white;
    16-bit and floating-point images are scaled to 8 bits.

    Args:
        path: the image file.
        max_pixels: refuse images whose header claims more pixels than this.

    Raises:
        ImageLoadError: for anything that is not a readable image within the limit; the
            message names the file and the reason. No other exception escapes.
    """
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except OSError as error:
        raise ImageLoadError(f"{path}: cannot read file ({error.strerror or error})") from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageLoadError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(status.st_mode):  # a pipe or a device could block or never end
        raise ImageLoadError(f"{path}: not a regular file")
    if status.st_size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise ImageLoadError(
                    f"{path}: {image.width}x{image.height} image has {pixels:,} pixels, "
                    f"more than the limit of {max_pixels:,} (decompression bomb?)"
                )
            image.seek(0)  # the first frame of an animation
            return _to_rgb(_oriented(image))
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        kind = _sniff(path)
        if kind in _IMAGE_KINDS:
            raise ImageLoadError(f"{path}: cannot decode image (a damaged {kind} file)") from None
        raise ImageLoadError(
            f"{path}: not an image file{f' (it is {kind})' if kind else ''}"
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({error})") from None
    except PermissionError as error:
        raise ImageLoadError(f"{path}: cannot read file ({error.strerror})") from None
    except MemoryError:
        raise ImageLoadError(f"{path}: not enough memory to decode the image") from None
    except Exception as error:  # noqa: BLE001  (decoders raise many types on corrupt data)
        reason = str(error) or type(error).__name__
        raise ImageLoadError(f"{path}: cannot decode image ({reason})") from None


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation; unreadable EXIF is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001  (a broken EXIF block must not refuse a good image)
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = _scale_to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (*_WHITE, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Integers within 0..65535 by that 16-bit range; other integers and floats by min..max."""
    is_16_bit = values.dtype.kind in "iu" and values.size and values.min() >= 0
    is_16_bit = bool(is_16_bit) and values.max() <= 65535
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (0.0, 65535.0) if is_16_bit else (float(values.min()), float(values.max()))
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.round((values - low) * scale), 0, 255).astype(np.uint8)


def _sniff(path: Path) -> str:
    """What a file that Pillow cannot identify seems to be, from its first bytes ("" if unknown)."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return ""
    for kind, signatures in _SIGNATURES.items():
        if head.startswith(signatures) and (kind != "WebP" or head[8:12] == b"WEBP"):
            return kind
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "an HTML page"
    if text.startswith((b"{", b"[")):
        return "JSON text"
    return ""


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, directories (their images, sorted) and glob patterns -> a list of paths.

    A directory gives its files with an image extension, and the other files whose
    content starts like an image (a JPEG saved without its extension); text and other
    files in it are left out. A pattern that matches nothing, a missing path and a folder
    without images are kept as given, so that loading them reports the problem by name.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if _looks_like_an_image(p))
            paths.extend(images) if images else paths.append(path)
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(item))
            paths.extend(Path(m) for m in matches) if matches else paths.append(path)
        else:
            paths.append(path)
    return paths


def _looks_like_an_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return not path.name.startswith(".") and path.is_file() and _sniff(path) in _IMAGE_KINDS
