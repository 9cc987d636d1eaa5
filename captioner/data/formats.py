"""Reading the caption files that public datasets ship, as `ImageRecord` lists.

`load_dataset` tells the format from the path (and, where the name says nothing, from the
content) and returns the records `captioner.data.karpathy.load_karpathy` returns: an id, the image
path (`images_root / name`), the split (train, val or test; Karpathy files may also say
restval) and the captions as `captioner.data.text.tokenize` tokens of the raw text.

- `karpathy`: Karpathy's split JSON (`dataset_*.json`). Split: the file's `split` fields.
  Images root by default: the file's folder.
- `flickr8k`: `Flickr8k.token.txt`, or its folder. Split: the lists
  `Flickr_8k.{train,dev,test}Images.txt` beside it (dev -> val), which must be there. Images
  root: none by default (the photos ship apart): it must be given.
- `flickr30k`: `results_20130124.token` (or any other `*.token` file). Split: the lists
  `*{train,dev,test}Images.txt` beside it if there are, else seeded. Images root: must be
  given.
- `captions-csv`: Kaggle's `captions.txt`, a CSV with an `image,caption` header (quoted
  captions may hold commas and quotes). Split: seeded. Images root by default: `Images/`
  beside it if there is one, else its folder.
- `coco`: `captions_train2014.json` / `captions_val2014.json`. Split: the file name
  (train2014 -> train, val2014 -> val). Images root: the folder holding that file's images,
  by default `../train2014` or `../val2014` from the file when it exists, else it must be
  given.

Token files hold `NAME.jpg#K<TAB>caption` lines. One COCO annotation file is read per call; for
Karpathy's train/val/test split of COCO, read `dataset_coco.json` (format `karpathy`), which
has everything.

Seeded split (files without a split): the image names are sorted, shuffled with
`random.Random(split_seed)`, and val and test take `HELD_OUT_LARGE` (1000) images each when
there are at least `LARGE_DATASET` (5000) images (Flickr8k's 6000/1000/1000), else 10% each
(at least one each from 3 images on); the rest is train. It does not depend on the order of
the lines, and it is always announced through `warn`.

Problems, decided as in `load_karpathy`: what loses a line or an entry is a grouped warning
(one line per kind through `warn`, with its count and the first line numbers); what leaves
nothing trustworthy to read is one `DatasetError`, a single line naming the file (and the
line, for line-based files).

- Fatal: a missing file; non-UTF-8 text (line and column named); an empty file; an unknown
  format; no images folder where the format has none by default; a missing or empty split
  list; an image in two split lists; a CSV without `image` and `caption` header columns; a
  line-based file whose non-blank lines are mostly (over half) malformed (the first bad line
  named); a split list whose names mostly have no captions (another dataset's list); no
  usable image at all.
- Warnings (the line or entry dropped): malformed lines in a mostly good file (no tab, bad
  `NAME#K` id, wrong number of CSV columns, a quoted field running over lines), empty
  captions, duplicate caption ids, captioned images named in no split list, split-list names
  without captions, names repeated in one split list, malformed COCO entries, COCO captions
  of unknown images, COCO images without captions.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from captioner.data.dataset import ImageRecord, print_warning
from captioner.data.dataset_problems import DatasetProblems
from captioner.data.karpathy import load_karpathy
from captioner.data.text import tokenize
from captioner.errors import DatasetError
from captioner.files import read_json, read_text

FORMATS = ("karpathy", "flickr8k", "flickr30k", "captions-csv", "coco")
# The caption files looked for when `load_dataset` is given a folder.
FOLDER_FILES = ("Flickr8k.token.txt", "results_20130124.token", "captions.txt")
LARGE_DATASET = 5000
HELD_OUT_LARGE = 1000
# Split lists beside a token file: (split, name ending); Flickr8k's dev list is val.
SPLIT_LISTS = (("train", "trainImages.txt"), ("val", "devImages.txt"), ("test", "testImages.txt"))
FLICKR8K_LISTS = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
_EXPECTED = (
    "a Karpathy split JSON, a COCO captions JSON, Flickr8k.token.txt or results_20130124.token "
    "(NAME.jpg#K<TAB>caption lines), or a captions.txt CSV with an 'image,caption' header"
)
_TOKEN_ID = re.compile(r"(.+)#(\d+)")
_TOKEN_LINE = re.compile(r"[^\t]+#\d+\t")
_COCO_SPLIT = re.compile(r"(train|val)(\d{4})")
# Karpathy files name their captions "sentences"; looked for at the start of a JSON file so
# that a large one is parsed once (by `load_karpathy`), not twice.
_KARPATHY_HEAD_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `load_dataset` read.

    Attributes:
        format: one of `FORMATS`.
        source: the caption file read.
        split_source: where the split came from, in words.
        default_images_root: the images folder used when none is given; None where it must be
            given.
        images_root: the images folder the records' paths start with.
    """

    format: str
    source: Path
    split_source: str
    default_images_root: Path | None
    images_root: Path

    @property
    def name(self) -> str:
        """A short name of the dataset, for its default run directory ("flickr8k", ...)."""
        if self.format in ("flickr8k", "flickr30k", "coco"):
            return self.format
        stem = self.source.stem.lower().removeprefix("dataset_")
        if self.format == "karpathy" and stem != "dataset":
            return stem  # dataset_flickr8k.json -> flickr8k
        return self.source.parent.name.lower() or "dataset"  # data/synthetic/dataset.json


def load_dataset(
    path: str | Path,
    images_root: str | Path | None = None,
    *,
    split_seed: int = 0,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[ImageRecord], DatasetInfo]:
    """Reads a caption file of any known format (see the module docstring).

    Args:
        path: the caption file, or a folder holding one of `FOLDER_FILES`.
        images_root: the folder the image names are relative to; defaults to the format's
            (see `DatasetInfo.default_images_root`).
        split_seed: the seed of the split made for files that have none.
        warn: receives the problem lines and the seeded-split notice (default: stderr).

    Returns:
        The records, in the order of the file, and what was read.

    Raises:
        DatasetError: see the module docstring for the problems that are fatal.
    """
    warn = warn or print_warning
    path = _caption_file(Path(path))
    if path.suffix.lower() == ".json":
        return _load_json(path, images_root, warn)
    text = read_text(path, DatasetError)
    if not text.strip():
        raise DatasetError(f"{path}: empty file, expected caption lines")
    name = path.name.lower()
    first_line = text.lstrip().split("\n", 1)[0]
    csv_name = name == "captions.txt" or name.endswith(".csv")
    if name.endswith((".token", ".token.txt")) or (not csv_name and _TOKEN_LINE.match(first_line)):
        return _load_token_file(path, text, images_root, split_seed, warn)
    if csv_name or _is_csv_header(first_line):
        return _load_captions_csv(path, text, images_root, split_seed, warn)
    raise DatasetError(f"{path}: not a known caption format (expected {_EXPECTED})")


def seeded_split(names: Iterable[str], seed: int = 0) -> dict[str, str]:
    """A deterministic train/val/test split of image names (rule in the module docstring).

    Returns:
        Each name's split.
    """
    ordered = sorted(set(names))
    random.Random(seed).shuffle(ordered)
    count = len(ordered)
    held = HELD_OUT_LARGE if count >= LARGE_DATASET else max(count // 10, int(count >= 3))
    return {
        name: "val" if i < held else "test" if i < 2 * held else "train"
        for i, name in enumerate(ordered)
    }


def _caption_file(path: Path) -> Path:
    """The caption file itself: `path`, or the one caption file in the folder `path`."""
    if not path.is_dir():
        if not path.exists():
            raise DatasetError(f"{path}: no such file")
        return path
    found = [path / name for name in FOLDER_FILES if (path / name).is_file()]
    if not found:
        raise DatasetError(
            f"{path}: no caption file in this folder (expected one of {', '.join(FOLDER_FILES)})"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(f"{path}: several caption files here ({names}); give one of them")
    return found[0]


def _is_csv_header(line: str) -> bool:
    columns = {c.strip().strip('"').lower() for c in line.split(",")}
    return {"image", "caption"} <= columns


def _records(
    captions: dict[str, list[list[str]]], split_of: dict[str, str], root: Path
) -> list[ImageRecord]:
    """Records of the captioned images that have a split; ids are positions in `captions`."""
    return [
        ImageRecord(image_id=i, path=root / name, split=split_of[name], captions=caps)
        for i, (name, caps) in enumerate(captions.items())
        if name in split_of
    ]


def _no_usable_images(path: Path, problems: DatasetProblems) -> DatasetError:
    summary = "; ".join(line.split(": ", 1)[1] for line in problems.lines())
    return DatasetError(f"{path}: no usable images" + (f" ({summary})" if summary else ""))


def _made_split(
    path: Path, captions: dict[str, list[list[str]]], seed: int, warn: Callable[[str], None]
) -> tuple[dict[str, str], str]:
    """The seeded split of the captioned images, announced through `warn`."""
    split_of = seeded_split(captions, seed)
    counts = {s: 0 for s in ("train", "val", "test")}
    for split in split_of.values():
        counts[split] += 1
    shown = " / ".join(f"{n} {s}" for s, n in counts.items())
    warn(f"no split in {path}: made a seeded split (seed {seed}): {shown}")
    return split_of, f"seeded split (seed {seed})"


class _Lines:
    """Counts the non-blank lines of a line-based file and its malformed ones.

    A malformed line is a grouped warning, unless more than half the lines are malformed:
    then `check` raises one error naming the first bad line.
    """

    def __init__(self, path: Path, problems: DatasetProblems):
        self.path = path
        self.problems = problems
        self.total = 0
        self.bad = 0
        self.first: tuple[int, str] | None = None

    def malformed(self, line: int, kind: str, message: str, spanned: int = 1) -> None:
        """Counts a malformed row starting at `line` (`spanned` lines long)."""
        self.bad += spanned
        self.first = self.first or (line, message)
        self.problems.add(f"{kind} (dropped)", f"line {line} ({message})")

    def check(self) -> None:
        if self.first is not None and self.bad * 2 > self.total:
            line, message = self.first
            raise DatasetError(
                f"{self.path}:{line}: {message} ({self.bad} of {self.total} lines malformed)"
            )


def _load_token_file(
    path: Path,
    text: str,
    images_root: str | Path | None,
    seed: int,
    warn: Callable[[str], None],
) -> tuple[list[ImageRecord], DatasetInfo]:
    """Flickr8k's `Flickr8k.token.txt` or Flickr30k's `results_20130124.token`."""
    fmt = "flickr8k" if path.name.lower().startswith("flickr8k") else "flickr30k"
    if images_root is None:
        dataset, folder = (
            ("Flickr8k", "Flicker8k_Dataset")
            if fmt == "flickr8k"
            else ("Flickr30k", "flickr30k-images")
        )
        raise DatasetError(
            f"{path}: {dataset} keeps its images apart from the captions: give the images "
            f"folder (--images), e.g. the {folder} folder"
        )
    root = Path(images_root)
    problems = DatasetProblems(path)
    lines = _Lines(path, problems)
    captions: dict[str, list[list[str]]] = {}
    seen: set[tuple[str, int]] = set()
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        lines.total += 1
        key, tab, raw = line.rstrip("\r").partition("\t")
        if not tab:
            lines.malformed(number, "lines without a tab", "no tab between image and caption")
            continue
        match = _TOKEN_ID.fullmatch(key.strip())
        if match is None:
            lines.malformed(number, "lines with a bad caption id", f"{key!r} is not NAME#NUMBER")
            continue
        name, caption_number = match[1], int(match[2])
        if (name, caption_number) in seen:
            problems.add("duplicate caption ids (the first kept)", f"line {number} ({key})")
            continue
        seen.add((name, caption_number))
        tokens = tokenize(raw)
        if not tokens:
            problems.add("empty captions (dropped)", f"line {number}")
            continue
        captions.setdefault(name, []).append(tokens)
    lines.check()
    if not captions:
        raise _no_usable_images(path, problems)
    lists = _split_lists(path, fmt)
    if not lists:
        problems.report(warn)
        split_of, split_source = _made_split(path, captions, seed, warn)
        return _records(captions, split_of, root), DatasetInfo(fmt, path, split_source, None, root)
    split_of, list_problems = _read_split_lists(lists, captions, path)
    for name in captions:
        if name not in split_of:
            problems.add("captioned images in no split list (dropped)", name)
    records = _records(captions, split_of, root)
    if not records:
        raise _no_usable_images(path, problems)
    for found in (problems, *list_problems):  # in the order the files were read
        found.report(warn)
    split_source = "split lists " + ", ".join(p.name for p in lists.values())
    return records, DatasetInfo(fmt, path, split_source, None, root)


def _split_lists(token_path: Path, fmt: str) -> dict[str, Path]:
    """The split lists beside a token file: all three, or none (not for Flickr8k)."""
    found = {}
    for split, ending in SPLIT_LISTS:
        matches = sorted(p for p in token_path.parent.glob(f"*{ending}") if p.is_file())
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise DatasetError(f"{token_path.parent}: several {split} split lists ({names})")
        if matches:
            found[split] = matches[0]
    if len(found) == len(SPLIT_LISTS) or (not found and fmt != "flickr8k"):
        return found
    if fmt == "flickr8k":
        missing = [FLICKR8K_LISTS[s] for s, _ in SPLIT_LISTS if s not in found]
        why = "Flickr8k's official split (they come with the token file in Flickr8k_text)"
    else:
        missing = [f"*{ending}" for s, ending in SPLIT_LISTS if s not in found]
        why = "or remove the others to get a seeded split"
    raise DatasetError(
        f"{token_path}: split list {', '.join(missing)} not found in {token_path.parent} ({why})"
    )


def _read_split_lists(
    lists: dict[str, Path],
    captions: dict[str, list[list[str]]],
    token_path: Path,
) -> tuple[dict[str, str], list[DatasetProblems]]:
    """Each listed image's split, from the split lists (one image name per line), and the
    problems of each list."""
    where: dict[str, tuple[str, Path, int]] = {}
    found = []
    for split, list_path in lists.items():
        text = read_text(list_path, DatasetError)
        problems = DatasetProblems(list_path)
        listed: list[int] = []
        uncaptioned: list[tuple[int, str]] = []
        for number, line in enumerate(text.split("\n"), 1):
            name = line.strip()
            if not name:
                continue
            if name in where:
                _, other, other_line = where[name]
                if other == list_path:
                    problems.add("repeated names (the first kept)", f"line {number} ({name})")
                    continue
                raise DatasetError(
                    f"{list_path}:{number}: {name} is also in {other.name}:{other_line} "
                    "(the splits must not overlap)"
                )
            listed.append(number)
            where[name] = (split, list_path, number)
            if name not in captions:
                uncaptioned.append((number, name))
                problems.add(
                    f"images without captions in {token_path.name} (dropped)",
                    f"line {number} ({name})",
                )
        if not listed:
            raise DatasetError(f"{list_path}: empty split list")
        if len(uncaptioned) * 2 > len(listed):
            number, name = uncaptioned[0]
            raise DatasetError(
                f"{list_path}:{number}: {name} has no captions in {token_path.name} "
                f"({len(uncaptioned)} of {len(listed)} listed images have none: "
                "the split list of another dataset?)"
            )
        found.append(problems)
    return {name: split for name, (split, _, _) in where.items()}, found


def _load_captions_csv(
    path: Path,
    text: str,
    images_root: str | Path | None,
    seed: int,
    warn: Callable[[str], None],
) -> tuple[list[ImageRecord], DatasetInfo]:
    """Kaggle's `captions.txt`: an `image,caption` CSV (quoted fields may hold commas)."""
    default_root = path.parent / "Images" if (path.parent / "Images").is_dir() else path.parent
    root = Path(images_root) if images_root is not None else default_root
    problems = DatasetProblems(path)
    lines = _Lines(path, problems)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    captions: dict[str, list[list[str]]] = {}
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not any(field.strip() for field in row):
                continue
            if header is None:
                header = [field.strip().lower() for field in row]
                if not {"image", "caption"} <= set(header):
                    raise DatasetError(
                        f"{path}:{start}: expected a header with 'image' and 'caption' "
                        f"columns, found {','.join(row)!r}"
                    )
                image_column, caption_column = header.index("image"), header.index("caption")
                continue
            spanned = end - start + 1
            lines.total += spanned
            if any("\n" in field for field in row):
                message = f"a quoted field runs over {spanned} lines (unclosed quote?)"
                lines.malformed(start, "quoted fields over several lines", message, spanned)
                continue
            if len(row) != len(header):
                message = f"expected {len(header)} columns, found {len(row)}"
                lines.malformed(start, "rows with a wrong number of columns", message)
                continue
            name, raw = row[image_column].strip(), row[caption_column]
            if not name:
                lines.malformed(start, "rows without an image name", "no image name")
                continue
            tokens = tokenize(raw)
            if not tokens:
                problems.add("empty captions (dropped)", f"line {start}")
                continue
            captions.setdefault(name, []).append(tokens)
    except csv.Error as error:
        raise DatasetError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    lines.check()
    if not captions:
        raise _no_usable_images(path, problems)
    problems.report(warn)
    split_of, split_source = _made_split(path, captions, seed, warn)
    info = DatasetInfo("captions-csv", path, split_source, default_root, root)
    return _records(captions, split_of, root), info


def _load_json(
    path: Path, images_root: str | Path | None, warn: Callable[[str], None]
) -> tuple[list[ImageRecord], DatasetInfo]:
    """A Karpathy split file (read by `load_karpathy`) or a COCO captions file."""
    try:
        with path.open("rb") as f:
            head = f.read(_KARPATHY_HEAD_BYTES)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read file ({error.strerror or error})") from None
    data = None
    if b'"sentences"' not in head:
        data = read_json(path, DatasetError)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetError(f"{path}: not a known caption format (expected {_EXPECTED})")
    if data is not None and "annotations" in data:
        return _load_coco(path, data, images_root, warn)
    root = Path(images_root) if images_root is not None else path.parent
    records = load_karpathy(path, root, warn=warn)
    return records, DatasetInfo("karpathy", path, "the file's 'split' fields", path.parent, root)


def _load_coco(
    path: Path, data: dict, images_root: str | Path | None, warn: Callable[[str], None]
) -> tuple[list[ImageRecord], DatasetInfo]:
    """A COCO captions file: `images` (`id`, `file_name`) and `annotations` (`image_id`,
    `caption`); the split is in the file name."""
    if not isinstance(data["annotations"], list):
        raise DatasetError(f"{path}: 'annotations' is not a list")
    match = _COCO_SPLIT.search(path.stem.lower())
    if match is None:
        raise DatasetError(
            f"{path}: cannot tell the split from the file name (expected captions_train2014.json "
            "or captions_val2014.json, or a Karpathy split JSON)"
        )
    split, folder = match[1], match[0]
    default_root = path.parent.parent / folder
    default_root = default_root if default_root.is_dir() else None
    root = Path(images_root) if images_root is not None else default_root
    if root is None:
        raise DatasetError(
            f"{path}: no {folder}/ folder beside {path.parent.name}/: give the folder of the "
            f"{folder} images (--images)"
        )
    problems = DatasetProblems(path)
    names: dict[int, str] = {}
    captions: dict[int, list[list[str]]] = {}
    for index, entry in enumerate(data["images"]):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not _is_int(image_id) or not isinstance(name, str) or not name.strip():
            problems.add("images without an integer 'id' and a 'file_name' (dropped)", f"#{index}")
        elif image_id in names:
            problems.add("duplicate image ids (the first kept)", f"#{index} id {image_id}")
        else:
            names[image_id], captions[image_id] = name, []
    for index, entry in enumerate(data["annotations"]):
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        raw = entry.get("caption") if isinstance(entry, dict) else None
        where = f"annotation #{index}"
        if not _is_int(image_id) or not isinstance(raw, str):
            problems.add("annotations without an integer 'image_id' and a 'caption'", where)
        elif image_id not in names:
            problems.add("captions of images not in 'images' (dropped)", f"{where} ({image_id})")
        elif any("\ud800" <= ch <= "\udfff" for ch in raw):
            problems.add("captions that are not valid Unicode (dropped)", where)
        elif not (tokens := tokenize(raw)):
            problems.add("empty captions (dropped)", where)
        else:
            captions[image_id].append(tokens)
    records = []
    for image_id, name in names.items():
        if captions[image_id]:
            records.append(ImageRecord(image_id, root / name, split, captions[image_id]))
        else:
            problems.add("images without captions (dropped)", f"{image_id} {name}")
    if not records:
        raise _no_usable_images(path, problems)
    problems.report(warn)
    info = DatasetInfo("coco", path, f"the file name ({folder} -> {split})", default_root, root)
    return records, info


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
