"""Procedural synthetic captioning dataset (coloured shapes on light backgrounds).

Every scene holds 1-3 non-overlapping objects, each a shape with a size and a colour. Images
are written as PNG files and the annotations as a Karpathy-style ``dataset.json`` with
reference captions, so the rest of the pipeline can treat it like COCO or Flickr8k.

Generation is seeded: image ``i`` of split ``s`` is drawn from its own stream
``numpy.random.default_rng([seed, s, i])``, so the same seed always gives the same files and
changing the size of one split leaves the others untouched.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import json
import math
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
SIZES: tuple[str, ...] = ("small", "large")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# "settled": each reference's first word settles the order it names the objects in (the
# default); "mixed": two references begin alike but run in opposite orders, as human
# captions of a photo do (the generator's version-1 references; docs/results.md).
ORDERS: tuple[str, ...] = ("settled", "mixed")

# Written into dataset.json; a dataset made by an older generator is made again on first use.
SYNTH_VERSION = 2
MIN_IMAGE_SIZE = 64
COLOUR_JITTER = 12
NOISE_STD = 10.0
# Box side ranges in pixels at the reference resolution of 128 px.
_SIDE_RANGES = {"small": (18, 24), "large": (32, 42)}
_REFERENCE_SIZE = 128
_PLACEMENT_TRIES = 50
_SCENE_TRIES = 100
_SAVE_THREADS = 2
_MAX_PENDING_SAVES = 64


def _phrase(obj: dict) -> list[str]:
    """Returns the tokens ``a <size> <colour> <shape>`` for one object."""
    size, colour = obj["attributes"]
    return ["a", size, colour, obj["name"]]


def _chain(phrases: list[list[str]], relation: list[str]) -> list[str]:
    """Joins phrases with a relation, e.g. ``P1 to the left of P2 to the left of P3``."""
    tokens = list(phrases[0])
    for phrase in phrases[1:]:
        tokens += relation + phrase
    return tokens


def _listing(phrases: list[list[str]]) -> list[str]:
    """Lists two or more phrases as ``P1 P2 and P3``."""
    return [token for phrase in phrases[:-1] for token in phrase] + ["and"] + phrases[-1]


def describe(objects: list[dict], orders: str = "settled") -> list[list[str]]:
    """Builds the tokenised reference captions for a scene.

    The captions of a scene with several objects begin with different words ("a", "from",
    "there"), so a caption's first word settles which object it names first. Were two of them
    to begin alike in opposite orders (say "a ... to the left of" and "a ... to the right
    of"), a decoder whose attention for a word is chosen before it sees the previous word
    (the paper's, attending from h_{t-1}) would be trained to look at both ends of the scene
    for the first object; greedy decoding then mixes the attributes of the leftmost and
    rightmost objects (measured in docs/results.md).

    Args:
        objects: Object dicts with ``name``, ``attributes`` ([size, colour]) and ``bbox``
            ([x, y, w, h]); they are ordered left to right by x-centre here.
        orders: "settled", or "mixed": the second caption of a scene with several objects
            is then "a ... to the right of a ...", right to left, beginning like the first.

    Returns:
        Three captions: left to right with relations (canonical), listed from the right (or,
        mixed, chained from the right), and listed from the left.
    """
    if orders not in ORDERS:
        raise ValueError(f"orders must be one of {ORDERS}, got {orders!r}")
    if not objects:
        raise ValueError("describe() needs at least one object")
    ordered = sorted(objects, key=lambda o: o["bbox"][0] + o["bbox"][2] / 2)
    phrases = [_phrase(o) for o in ordered]
    left_to_right = _chain(phrases, ["to", "the", "left", "of"])
    if len(phrases) == 1:
        from_the_right = ["a", "single"] + phrases[0][1:]
        listing = ["there", "is"] + phrases[0]
    elif orders == "mixed":
        from_the_right = _chain(phrases[::-1], ["to", "the", "right", "of"])
        listing = ["there", "are"] + _listing(phrases)
    else:
        from_the_right = ["from", "the", "right"] + _listing(phrases[::-1])
        listing = ["there", "are"] + _listing(phrases)
    return [left_to_right, from_the_right, listing]


def _vertices(shape: str, side: int) -> list[tuple[float, float]]:
    """Returns polygon vertices for ``shape`` inside a ``side`` x ``side`` box."""
    c = (side - 1) / 2
    r = (side - 1) / 2
    if shape == "triangle":
        return [(c, 0.0), (side - 1.0, side - 1.0), (0.0, side - 1.0)]
    if shape == "diamond":
        return [(c, 0.0), (side - 1.0, c), (c, side - 1.0), (0.0, c)]
    if shape == "hexagon":
        angles = [math.radians(60 * k) for k in range(6)]
        return [(c + r * math.cos(a), c + r * math.sin(a)) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = math.radians(-90 + 36 * k)
            points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
        return points
    raise ValueError(f"unknown polygon shape {shape!r}")


@functools.lru_cache(maxsize=1024)
def _shape_mask(shape: str, side: int) -> Image.Image:
    """Draws a binary mask of ``shape`` in a ``side`` px box, cropped tight to the shape."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([0, 0, side - 1, side - 1], fill=255)
    elif shape == "square":
        draw.rectangle([0, 0, side - 1, side - 1], fill=255)
    else:
        draw.polygon(_vertices(shape, side), fill=255)
    return mask.crop(mask.getbbox())


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Returns a light plain or noisy (half/half) background as a uint8 HxWx3 array."""
    level = int(rng.integers(205, 246))
    tint = rng.integers(-5, 6, size=3)
    base = np.clip(level + tint, 200, 250).astype(np.uint8)
    if rng.random() < 0.5:
        return np.broadcast_to(base, (image_size, image_size, 3)).copy()
    noise = rng.standard_normal((image_size, image_size, 3), dtype=np.float32) * NOISE_STD
    return np.clip(base.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _side_bounds(size: str, image_size: int) -> tuple[int, int]:
    """Returns the inclusive box side range for a size word at ``image_size``."""
    lo, hi = _SIDE_RANGES[size]
    scale = image_size / _REFERENCE_SIZE
    return max(4, round(lo * scale)), max(4, round(hi * scale))


def _place(
    rng: np.random.Generator,
    w: int,
    h: int,
    placed: list[list[int]],
    image_size: int,
) -> list[int] | None:
    """Finds a free position for a ``w`` x ``h`` box, or None after a bounded number of tries."""
    border = max(1, round(2 * image_size / _REFERENCE_SIZE))
    margin = max(2, round(4 * image_size / _REFERENCE_SIZE))
    min_dx = 0.1 * image_size
    for _ in range(_PLACEMENT_TRIES):
        x = int(rng.integers(border, image_size - border - w + 1))
        y = int(rng.integers(border, image_size - border - h + 1))
        cx = x + w / 2
        ok = True
        for px, py, pw, ph in placed:
            if abs(cx - (px + pw / 2)) < min_dx or (
                x < px + pw + margin
                and px < x + w + margin
                and y < py + ph + margin
                and py < y + h + margin
            ):
                ok = False
                break
        if ok:
            return [x, y, w, h]
    return None


def make_scene(rng: np.random.Generator, image_size: int = 128) -> tuple[Image.Image, list[dict]]:
    """Draws one random scene.

    Args:
        rng: Random generator; the scene is a pure function of its state.
        image_size: Side of the square image in pixels.

    Returns:
        The RGB image and its objects (``name``, ``attributes``, ``bbox``), left to right.
    """
    colour_names = list(COLOURS)
    # The object count is fixed before any retry so that 1, 2 and 3 objects stay equally likely.
    count = int(rng.integers(1, 4))
    background = _background(rng, image_size)
    for _ in range(_SCENE_TRIES):
        objects, masks, fills = [], [], []
        for _ in range(count):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = colour_names[int(rng.integers(len(colour_names)))]
            size = SIZES[int(rng.integers(len(SIZES)))]
            lo, hi = _side_bounds(size, image_size)
            mask = _shape_mask(shape, int(rng.integers(lo, hi + 1)))
            jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
            fill = np.clip(np.array(COLOURS[colour]) + jitter, 0, 255)
            bbox = _place(rng, mask.width, mask.height, [o["bbox"] for o in objects], image_size)
            if bbox is None:
                break
            objects.append({"name": shape, "attributes": [size, colour], "bbox": bbox})
            masks.append(mask)
            fills.append(tuple(int(v) for v in fill))
        else:
            image = Image.fromarray(background, "RGB")
            for obj, mask, fill in zip(objects, masks, fills, strict=True):
                x, y, w, h = obj["bbox"]
                image.paste(fill, (x, y, x + w, y + h), mask)
            objects.sort(key=lambda o: o["bbox"][0] + o["bbox"][2] / 2)
            return image, objects
    raise RuntimeError(f"could not place objects in a {image_size} px scene")


def generate_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 6000,
    num_val: int = 500,
    num_test: int = 500,
    seed: int = 0,
    image_size: int = 128,
    orders: str = "settled",
) -> pathlib.Path:
    """Writes out_dir/dataset.json and the PNG images it names; returns the json path.

    Args:
        out_dir: Output directory (created if missing).
        num_train: Number of training images.
        num_val: Number of validation images.
        num_test: Number of test images.
        seed: Non-negative random seed; equal seeds give byte-identical output.
        image_size: Side of the square images in pixels (at least 64).
        orders: How the references order the objects (see `describe`); the images are the
            same either way.

    Returns:
        Path to the written ``dataset.json``.

    Raises:
        ValueError: For negative counts or seed, or an image size below 64.
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in counts.items():
        if int(n) != n or n < 0:
            raise ValueError(f"num_{split} must be a non-negative integer, got {n!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if orders not in ORDERS:
        raise ValueError(f"orders must be one of {ORDERS}, got {orders!r}")
    if int(image_size) != image_size or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")

    out = pathlib.Path(out_dir)
    images: list[dict] = []
    imgid = sentid = 0
    # Scenes are drawn sequentially (so the output is deterministic); PNG encoding and file
    # writes release the GIL, so they run on a few threads with a bounded backlog.
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(_SAVE_THREADS) as pool:
        for split_index, split in enumerate(SPLITS):
            split_dir = out / "images" / split
            split_dir.mkdir(parents=True, exist_ok=True)
            for index in range(int(counts[split])):
                rng = np.random.default_rng([int(seed), split_index, index])
                image, objects = make_scene(rng, int(image_size))
                filename = f"{split}_{index:05d}.png"
                if len(pending) >= _MAX_PENDING_SAVES:
                    pending.popleft().result()
                pending.append(pool.submit(_save_png, image, split_dir / filename))
                images.append(_record(split, filename, imgid, sentid, objects, orders))
                imgid += 1
                sentid += len(images[-1]["sentences"])
        for future in pending:
            future.result()

    data = {
        "dataset": "synthetic",
        "synth_version": SYNTH_VERSION,
        "image_size": int(image_size),
        "seed": int(seed),
        "orders": orders,
    }
    data["images"] = images
    json_path = out / "dataset.json"
    with open(json_path, "w", encoding="utf-8") as f:
        # json.dumps uses the C encoder in one shot; json.dump would stream in pure Python.
        f.write(json.dumps(data, indent=None, separators=(",", ":")))
    return json_path


def is_current(json_path: str | os.PathLike) -> bool:
    """Whether ``json_path`` is a synthetic dataset of this generator version and the default
    (settled) orders, the main job's."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("synth_version") == SYNTH_VERSION
        and data.get("orders", "settled") == "settled"
    )


def _save_png(image: Image.Image, path: pathlib.Path) -> None:
    """Writes an image as a fast, lightly compressed PNG."""
    image.save(path, format="PNG", compress_level=1)


def _record(
    split: str, filename: str, imgid: int, sentid: int, objects: list[dict], orders: str
) -> dict:
    """Builds the Karpathy-format entry of one image, numbering captions from ``sentid``."""
    sentences = []
    for k, tokens in enumerate(describe(objects, orders)):
        sentences.append(
            {"tokens": tokens, "raw": " ".join(tokens), "imgid": imgid, "sentid": sentid + k}
        )
    return {
        "filepath": f"images/{split}",
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
        "objects": objects,
    }
