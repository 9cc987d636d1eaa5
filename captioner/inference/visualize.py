"""Attention visualisation: per-word soft-attention overlays and raw npz dumps.

Uses only numpy, Pillow and matplotlib's object-oriented Agg API (``Figure`` +
``FigureCanvasAgg``), so it never touches pyplot global state, needs no display
and is safe to call from several threads.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["load_attention", "save_attention", "upsample_map"]

SUPPORTED_FORMATS = ("png", "npz")

_MAX_COLS = 5
_PANEL_INCHES = 2.2
_TITLE_INCHES = 0.3
_DPI = 90
_CMAP = "jet"
_OVERLAY_ALPHA = 0.55
# Longest side (pixels) of the image as drawn in one panel; larger images are
# downsized first so rendering stays fast and the maps are upsampled only once.
_DISPLAY_MAX_SIDE = 320
_CAPTION_CHARS = 30  # per line; the caption title wraps onto at most 2 lines


def upsample_map(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smoothly upsamples a 2-D attention map.

    Args:
        alpha: (gh, gw) attention weights.
        size: Target (height, width) in pixels.

    Returns:
        (height, width) float32 map, bicubically interpolated and clipped to be
        non-negative; not renormalised (the caller scales it for display).

    Raises:
        ValueError: If ``alpha`` is not 2-D or ``size`` is not positive.
    """
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim != 2 or alpha.size == 0:
        raise ValueError(f"alpha must be a non-empty 2-D array, got shape {alpha.shape}")
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size}")
    alpha = np.nan_to_num(alpha, nan=0.0, posinf=0.0, neginf=0.0)
    img = Image.fromarray(np.ascontiguousarray(alpha))  # float32 2-D -> mode "F"
    up = np.asarray(img.resize((width, height), resample=Image.Resampling.BICUBIC))
    # Bicubic overshoots slightly around sharp peaks; attention is non-negative.
    return np.clip(up, 0.0, None).astype(np.float32, copy=False)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Coerces an image array to (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        if image.size and float(np.nanmax(image)) <= 1.0:
            image = image * 255.0
        image = np.clip(np.nan_to_num(image), 0, 255).astype(np.uint8)
    return image


def _escape(text: str) -> str:
    """Stops matplotlib from reading ``$`` in words as mathtext."""
    return text.replace("$", r"\$")


def _display_image(image: np.ndarray) -> np.ndarray:
    """Downsizes a large image for panel rendering (aspect ratio kept)."""
    height, width = image.shape[:2]
    scale = _DISPLAY_MAX_SIDE / max(height, width)
    if scale >= 1.0:
        return image
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR))


def _render_png(
    path: Path,
    image: np.ndarray,
    words: Sequence[str],
    alphas: np.ndarray,
    betas: np.ndarray | None,
) -> None:
    """Draws the image panel plus one attention overlay per word and saves a PNG."""
    shown = _display_image(image)
    height, width = shown.shape[:2]
    n_panels = len(words) + 1
    ncols = min(_MAX_COLS, n_panels)
    nrows = math.ceil(n_panels / ncols)
    # Keep panels ~2.2 in wide; let the height follow the image's aspect ratio
    # (bounded so very wide/tall images stay legible).
    aspect = min(max(height / width, 0.4), 2.0)
    panel_h = _PANEL_INCHES * aspect + _TITLE_INCHES
    fig = Figure(figsize=(ncols * _PANEL_INCHES, nrows * panel_h), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()

    caption = " ".join(words)
    title = "input"
    if caption:
        title = textwrap.fill(caption, _CAPTION_CHARS, max_lines=2, placeholder=" ...")
    axes[0].imshow(shown)
    axes[0].set_title(_escape(title), fontsize=8, style="italic", linespacing=1.1)

    for t, word in enumerate(words):
        ax = axes[t + 1]
        heat = upsample_map(alphas[t], (height, width))
        peak = float(heat.max())
        if peak > 0:
            heat = heat / peak
        ax.imshow(shown)
        ax.imshow(heat, cmap=_CMAP, alpha=_OVERLAY_ALPHA, vmin=0.0, vmax=1.0)
        ax.set_title(_escape(str(word)), fontsize=11)
        if betas is not None:
            ax.text(
                0.03,
                0.04,
                f"β={float(betas[t]):.2f}",
                transform=ax.transAxes,
                fontsize=7,
                ha="left",
                va="bottom",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.7},
            )

    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.3)
    fig.savefig(path, dpi=_DPI)


def save_attention(
    path_stem: str | os.PathLike[str],
    image: np.ndarray,
    words: Sequence[str],
    alphas: np.ndarray,
    betas: np.ndarray | None = None,
    formats: Collection[str] = SUPPORTED_FORMATS,
) -> list[Path]:
    """Saves per-word attention maps as a PNG grid and/or a raw npz file.

    Args:
        path_stem: Output path without extension; ``.png`` / ``.npz`` is appended.
            Parent directories are created.
        image: (H, W, 3) uint8 original image, any size.
        words: The T generated words (no ``<start>`` / ``<end>``).
        alphas: (T, gh, gw) attention maps, one per word.
        betas: Optional (T,) gating scalars, shown under each word.
        formats: Which of ``"png"`` and ``"npz"`` to write.

    Returns:
        Paths of the written files, in ``formats`` order.

    Raises:
        ValueError: On unknown formats or inconsistent shapes.
    """
    if isinstance(formats, str):
        formats = (formats,)
    fmts = [f.lower().lstrip(".") for f in formats]
    unknown = sorted(set(fmts) - set(SUPPORTED_FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; supported: {SUPPORTED_FORMATS}")
    fmts = list(dict.fromkeys(fmts))

    words = [str(w) for w in words]
    alphas = np.asarray(alphas, dtype=np.float32)
    if alphas.ndim != 3:
        raise ValueError(f"alphas must be 3-D (T, gh, gw), got shape {alphas.shape}")
    if alphas.shape[0] != len(words):
        raise ValueError(f"got {len(words)} words but {alphas.shape[0]} attention maps")
    if 0 in alphas.shape[1:]:
        raise ValueError(f"attention grid must be non-empty, got shape {alphas.shape}")
    if betas is not None:
        betas = np.asarray(betas, dtype=np.float32).reshape(-1)
        if betas.shape[0] != len(words):
            raise ValueError(f"got {len(words)} words but {betas.shape[0]} betas")
    image = _as_rgb_uint8(image)

    stem = os.fspath(path_stem)
    written: list[Path] = []
    for fmt in fmts:
        path = Path(f"{stem}.{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "png":
            _render_png(path, image, words, alphas, betas)
        else:
            arrays: dict[str, np.ndarray] = {
                "alphas": alphas,
                "words": np.array(words, dtype=str),
                "image_size": np.array(image.shape[:2], dtype=np.int64),
                "grid_size": np.array(alphas.shape[1:], dtype=np.int64),
            }
            if betas is not None:
                arrays["betas"] = betas
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)
        written.append(path)
    return written


def load_attention(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads an attention npz written by `save_attention`.

    Args:
        path: The ``.npz`` file.

    Returns:
        Dict with ``alphas`` (T, gh, gw) float32, ``words`` list of str,
        ``image_size`` and ``grid_size`` as (height, width) int tuples, and
        ``betas`` (T,) float32 or None when none were saved.
    """
    with np.load(path, allow_pickle=False) as data:
        words = data["words"]
        return {
            "alphas": data["alphas"].astype(np.float32, copy=False),
            "words": [str(w) for w in words.reshape(-1)],
            "image_size": tuple(int(v) for v in data["image_size"]),
            "grid_size": tuple(int(v) for v in data["grid_size"]),
            "betas": data["betas"].astype(np.float32, copy=False) if "betas" in data else None,
        }
