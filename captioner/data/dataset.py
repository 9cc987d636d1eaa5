"""A dataset as the rest of the package sees it: image records with their captions, by split."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from captioner.data.dataset_problems import EXAMPLES_SHOWN
from captioner.errors import DatasetError

SPLITS = ("train", "restval", "val", "test")
# `restval` (the COCO images outside the 5k val/test sets) is training data.
SPLIT_MEMBERS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


@dataclasses.dataclass
class ImageRecord:
    """One image of a dataset, with its reference captions (token lists)."""

    image_id: int
    path: Path
    split: str
    captions: list[list[str]]
    objects: list[dict] | None = None


def print_warning(line: str) -> None:
    """The default destination of dataset warnings: one line on stderr."""
    print(f"warning: {line}", file=sys.stderr)


def check_image_files(
    records: Sequence[ImageRecord],
    *,
    source: str | Path,
    skip_missing: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[ImageRecord]:
    """The records whose image file exists; missing ones refused, or skipped with a warning.

    Raises:
        DatasetError: some image files are missing and `skip_missing` is False; the message
            says how many, names the first few and the way out.
    """
    missing = [r for r in records if not r.path.is_file()]
    if not missing:
        return list(records)
    shown = ", ".join(str(r.path) for r in missing[:EXAMPLES_SHOWN])
    more = ", ..." if len(missing) > EXAMPLES_SHOWN else ""
    counted = f"{len(missing)} of {len(records)} image files are missing: {shown}{more}"
    if not skip_missing:
        raise DatasetError(
            f"{source}: {counted}; check the images folder (--images) or skip them with "
            "--skip-missing"
        )
    (warn or print_warning)(f"{source}: {counted} (skipped)")
    kept = [r for r in records if r.path.is_file()]
    if not kept:
        raise DatasetError(f"{source}: none of the {len(records)} image files exists")
    return kept


def count_long_captions(records: Sequence[ImageRecord], max_length: int) -> tuple[int, int]:
    """(captions longer than `max_length` words, all captions) of the records."""
    lengths = [len(c) for r in records for c in r.captions]
    return sum(n > max_length for n in lengths), len(lengths)


def select_split(records: Sequence[ImageRecord], split: str) -> list[ImageRecord]:
    """The records of a split; "train" includes `restval`."""
    if split not in SPLIT_MEMBERS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_MEMBERS)}")
    members = SPLIT_MEMBERS[split]
    return [r for r in records if r.split in members]
