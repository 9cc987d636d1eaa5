"""Captioning image files: loading, batching, and writing results and attention maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from captioner.data.image_pipeline import resize_images
from captioner.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from captioner.inference.captioner import Caption, Captioner
from captioner.inference.visualize import save_attention


@dataclasses.dataclass
class FileResult:
    """The outcome for one input file: a caption, or the error that prevented it."""

    path: Path
    caption: Caption | None = None
    error: str | None = None
    attention_files: list[Path] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        if self.caption is None:
            return {"image": str(self.path), "error": self.error}
        row = {
            "image": str(self.path),
            "caption": self.caption.text,
            "tokens": self.caption.words,
            "score": round(self.caption.score, 6),
        }
        if self.attention_files:
            row["attention"] = [str(p) for p in self.attention_files]
        return row


def _read_batch(
    paths: Sequence[Path], size: int, max_pixels: int
) -> tuple[dict[int, np.ndarray], dict[int, str], np.ndarray | None]:
    """Loads and resizes a batch of files: (originals by position, errors by position,
    (N, size, size, 3) uint8 pixels of the readable ones in position order, or None)."""
    originals: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            originals[i] = load_image(path, max_pixels)
        except ImageLoadError as error:
            errors[i] = str(error)
    pixels = resize_images(list(originals.values()), size) if originals else None
    return originals, errors, pixels


def caption_files(
    captioner: Captioner,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    attention_dir: str | Path | None = None,
    attention_formats: Sequence[str] = ("png", "npz"),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[FileResult]:
    """Captions image files batch by batch, yielding one result per path in order.

    A file that cannot be read gives a result with `error` set; the others go on.
    Images with more than `max_pixels` pixels are refused before decoding. The next batch
    is read and resized in a background thread while the current one is captioned.
    """
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=1) as reader:

        def read(start: int) -> Future:
            chunk = paths[start : start + batch_size]
            return reader.submit(_read_batch, chunk, captioner.image_size, max_pixels)

        pending = read(starts[0]) if starts else None
        for start in starts:
            originals, errors, pixels = pending.result()
            if start + batch_size < len(paths):
                pending = read(start + batch_size)
            chunk = paths[start : start + batch_size]
            results = [FileResult(path, error=errors.get(i)) for i, path in enumerate(chunk)]
            if originals:
                for i, caption in zip(originals, captioner.caption(pixels)):
                    results[i].caption = caption
                    if attention_dir is not None:
                        stem = Path(attention_dir) / f"{start + i:05d}_{chunk[i].stem}"
                        results[i].attention_files = save_attention(
                            stem,
                            originals[i],
                            caption.words,
                            caption.alphas,
                            caption.betas,
                            formats=attention_formats,
                        )
            yield from results
