"""Reading Karpathy split JSON files (COCO, Flickr8k/30k and the synthetic dataset)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from captioner.data.dataset import SPLITS, ImageRecord, print_warning
from captioner.data.dataset_problems import DatasetProblems
from captioner.data.text import tokenize
from captioner.errors import DatasetError
from captioner.files import read_json


def load_karpathy(
    json_path: str | Path,
    images_root: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[ImageRecord]:
    """Reads a Karpathy split file (COCO, Flickr8k/30k or the synthetic dataset).

    Entries that cannot be used are dropped and reported through `warn`, one line per
    kind of problem with its count and the first few examples: malformed entries, unknown
    split names, duplicate images (the first entry is kept), empty or whitespace-only
    captions, captions that are not valid Unicode. Images without captions are kept (the
    callers skip them) and reported.

    Args:
        json_path: the dataset JSON.
        images_root: the folder that `filepath/filename` are relative to; defaults to the
            JSON's folder.
        warn: receives the problem lines (default: printed on stderr).

    Raises:
        DatasetError: the file is missing, not UTF-8, not valid JSON (line and column are
            named), not a Karpathy split file, or has no usable image.
    """
    json_path = Path(json_path)
    root = Path(images_root) if images_root is not None else json_path.parent
    data = read_json(json_path, DatasetError)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{json_path}: not a Karpathy split file (no 'images' list)")
    problems = DatasetProblems(json_path)
    records = []
    seen: set[Path] = set()
    for index, entry in enumerate(data["images"]):
        record = _read_entry(entry, index, root, problems)
        if record is None:
            continue
        if record.path in seen:
            problems.add("duplicate image entries (the first kept)", _where(entry, index))
            continue
        seen.add(record.path)
        if not record.captions:
            problems.add(
                "images without captions (not used for training or scoring)", _where(entry, index)
            )
        records.append(record)
    if not records:
        summary = "; ".join(line.split(": ", 1)[1] for line in problems.lines())
        raise DatasetError(f"{json_path}: no usable images" + (f" ({summary})" if summary else ""))
    problems.report(warn or print_warning)
    return records


def _where(entry: object, index: int) -> str:
    name = entry.get("filename") if isinstance(entry, dict) else None
    return f"#{index} {name}" if isinstance(name, str) else f"#{index}"


def _read_entry(
    entry: object, index: int, root: Path, problems: DatasetProblems
) -> ImageRecord | None:
    """One image entry as a record, or None (and the problem counted) if it is unusable."""
    where = _where(entry, index)
    if not isinstance(entry, dict):
        problems.add("entries that are not JSON objects (dropped)", where)
        return None
    filename, filepath = entry.get("filename"), entry.get("filepath", "")
    if not isinstance(filename, str) or not filename.strip() or not isinstance(filepath, str):
        problems.add("entries without a valid 'filename' (dropped)", where)
        return None
    split = entry.get("split")
    if split not in SPLITS:
        problems.add(f"images with unknown split {split!r} (dropped)", where)
        return None
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        problems.add("entries whose 'sentences' is not a list (dropped)", where)
        return None
    captions = []
    for number, sentence in enumerate(sentences):
        tokens = _caption_tokens(sentence)
        if tokens is None:
            problems.add("malformed captions (dropped)", f"{where} caption {number}")
        elif any(_is_invalid_unicode(t) for t in tokens):
            problems.add(
                "captions that are not valid Unicode (dropped)", f"{where} caption {number}"
            )
        elif not tokens:
            problems.add("empty or whitespace-only captions (dropped)", f"{where} caption {number}")
        else:
            captions.append(tokens)
    image_id = entry.get("cocoid", entry.get("imgid", index))
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        problems.add("entries with a non-integer id (their position used)", where)
        image_id = index
    objects = entry.get("objects")
    return ImageRecord(
        image_id=image_id,
        path=root / filepath / filename,
        split=split,
        captions=captions,
        objects=objects if isinstance(objects, list) else None,
    )


def _caption_tokens(sentence: object) -> list[str] | None:
    """A caption's lower-cased tokens (the raw text tokenised if none); None if malformed."""
    if not isinstance(sentence, dict):
        return None
    tokens, raw = sentence.get("tokens"), sentence.get("raw", "")
    if tokens:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            return None
        return [t.strip().lower() for t in tokens if t.strip()]
    if not isinstance(raw, str):
        return None
    return tokenize(raw)


def _is_invalid_unicode(text: str) -> bool:
    # JSON escapes can hold lone surrogates ("\ud800"), which no UTF-8 file can store.
    return any("\ud800" <= ch <= "\udfff" for ch in text)
