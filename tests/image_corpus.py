"""A generated corpus of awkward (valid) and broken image files, for the loader and the CLI."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_valid_images(folder: Path) -> dict[Path, tuple[int, int]]:
    """Awkward images that must all load; returns each path with its expected (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pixels(30, 40))
    grey16 = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    frames = [Image.fromarray(_pixels(20, 24, seed)) for seed in range(3)]
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    rgba = np.dstack([_pixels(30, 40), np.linspace(0, 255, 1200).reshape(30, 40)]).astype(np.uint8)
    rotated = Image.fromarray(_pixels(20, 40))  # stored 40 wide, shown 20 wide after EXIF
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    files = {
        "rgb.jpg": (_encoded(rgb, "JPEG"), (30, 40)),
        "UPPER_CASE.JPG": (_encoded(rgb, "JPEG"), (30, 40)),
        "rgb.bmp": (_encoded(rgb, "BMP"), (30, 40)),
        "grey.png": (_encoded(rgb.convert("L"), "PNG"), (30, 40)),
        "grey16.png": (_encoded(Image.fromarray(grey16), "PNG"), (30, 40)),
        "grey16.tif": (_encoded(Image.fromarray(grey16), "TIFF"), (30, 40)),
        "float.tif": (_encoded(Image.fromarray(grey16.astype(np.float32) / 7), "TIFF"), (30, 40)),
        "int32.tif": (_encoded(Image.fromarray(grey16.astype(np.int32) * 9), "TIFF"), (30, 40)),
        "bilevel.png": (_encoded(rgb.convert("1"), "PNG"), (30, 40)),
        "palette.gif": (_encoded(palette, "GIF"), (30, 40)),
        "palette_transparent.png": (_encoded(transparent, "PNG"), (30, 40)),
        "rgba.png": (_encoded(Image.fromarray(rgba), "PNG"), (30, 40)),
        "grey_alpha.png": (_encoded(Image.fromarray(rgba).convert("LA"), "PNG"), (30, 40)),
        "cmyk.jpg": (_encoded(rgb.convert("CMYK"), "JPEG"), (30, 40)),
        "cmyk.tif": (_encoded(rgb.convert("CMYK"), "TIFF"), (30, 40)),
        "animated.gif": (
            _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
            (20, 24),
        ),
        "animated.png": (
            _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
            (20, 24),
        ),
        "exif_rotated.jpg": (_encoded(rotated, "JPEG", exif=exif), (40, 20)),
        "one_pixel.png": (_encoded(Image.fromarray(_pixels(1, 1)), "PNG"), (1, 1)),
        "wide_1x500.png": (_encoded(Image.fromarray(_pixels(1, 500)), "PNG"), (1, 500)),
        "tall_500x1.jpg": (_encoded(Image.fromarray(_pixels(500, 1)), "JPEG"), (500, 1)),
        "png_named.jpg": (_encoded(rgb, "PNG"), (30, 40)),
        "jpeg_named.png": (_encoded(rgb, "JPEG"), (30, 40)),
        "webp_image.webp": (_encoded(rgb, "WEBP"), (30, 40)),
    }
    expected = {}
    for name, (data, shape) in files.items():
        (folder / name).write_bytes(data)
        expected[folder / name] = shape
    return expected


def write_broken_images(folder: Path) -> dict[Path, str]:
    """Files that must be refused; returns each path with a phrase its error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = _encoded(Image.fromarray(_pixels(64, 64)), "JPEG")
    png = _encoded(Image.fromarray(_pixels(64, 64)), "PNG")
    files = {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "cannot decode image"),
        "truncated.png": (png[: len(png) // 2], "cannot decode image"),
        "header_only.png": (png[:40], "a damaged PNG file"),
        "notes.png": (b"shopping list: eggs, milk\n", "not an image file"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404</body></html>", "(it is an HTML page)"),
        "random.jpg": (np.random.default_rng(1).bytes(2048), "not an image file"),
        "bomb.png": (png_claiming_size(100_000, 100_000), "decompression bomb"),
        "bomb_under_pillow_limit.png": (png_claiming_size(9000, 9000), "decompression bomb"),
    }
    expected = {}
    for name, (data, reason) in files.items():
        (folder / name).write_bytes(data)
        expected[folder / name] = reason
    directory = folder / "folder.jpg"
    directory.mkdir(exist_ok=True)
    expected[directory] = "is a directory"
    expected[folder / "missing.png"] = "no such file"
    return expected
