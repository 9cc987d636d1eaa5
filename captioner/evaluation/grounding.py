"""Attention grounding: does the attention for a word that names an object fall on it?

A caption is read as phrases the way :func:`captioner.evaluation.metrics.parse_objects`
reads it: every object-name (shape) token closes a phrase whose attribute tokens are those
seen since the previous name. The phrase refers to the scene object that fits it best:

- the objects with the same name are the candidates; none -> the word is *absent* (a
  hallucinated object) and is left out of the scores;
- among them, the one sharing the most attributes with the phrase is the referent; a tie
  (two objects fit equally well, identical duplicates included) -> *ambiguous*, left out.

Left-out words are counted in the results. But a caption that names only its easiest
object scores as well on `pointing_accuracy` as one that names them all, so a second score
is taken over the scene's objects instead of the caption's words:
``pointing_accuracy_all_objects`` counts every object of every scene, and an object is a hit
only when the caption names it (unambiguously) and the map of its first mention points at
it; an object left out, or named only ambiguously, is a miss. Saying less cannot raise it.

For every scored phrase one attention map is scored (``word``):

- ``"shape"``: the map of the name token (e.g. "circle");
- ``"first"``: the map of the phrase's first descriptive token, its first attribute (e.g.
  the size word of "a large red circle"), or the name if the phrase has no attribute;
- ``"phrase"``: the mean of the maps of all the phrase's attribute and name tokens.

Geometry: the attention grid covers the whole image, resized without keeping its aspect
ratio, so cell ``(r, c)`` of a ``(gh, gw)`` grid is the image box
``x in [c W/gw, (c+1) W/gw), y in [r H/gh, (r+1) H/gh)`` of the original ``W x H`` image
(the receptive field of a cell is wider; this is the usual approximation). Boxes are
``[x, y, w, h]`` in pixels of the original image.

- pointing hit: the centre of the peak cell (argmax of the map) lies inside the box;
- attention in box: the share of the map's mass inside the box, each cell's mass spread
  evenly over its area;
- chance levels: a peak drawn uniformly over the cells hits with probability (cells whose
  centre is in the box) / (all cells); uniform attention puts (box area) / (image area) of
  its mass in the box.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

import numpy as np

WORD_CHOICES = ("shape", "first", "phrase")


@dataclasses.dataclass(frozen=True)
class Mention:
    """One object phrase of a caption and the scene object it refers to.

    Attributes:
        name_index: Token index of the object name (shape word).
        attribute_indices: Token indices of the phrase's attribute words, in order.
        referent: Index of the referred object in the scene's object list, or None.
        status: ``"matched"``, ``"absent"`` (no object of that name) or ``"ambiguous"``.
    """

    name_index: int
    attribute_indices: tuple[int, ...]
    referent: int | None
    status: str

    def word_indices(self, word: str) -> tuple[int, ...]:
        """Token indices whose attention maps are scored for ``word`` (see module doc)."""
        if word == "shape":
            return (self.name_index,)
        if word == "first":
            return (self.attribute_indices or (self.name_index,))[:1]
        if word == "phrase":
            return (*self.attribute_indices, self.name_index)
        raise ValueError(f"unknown scored word {word!r}; choose from {WORD_CHOICES}")


def find_mentions(
    tokens: Sequence[str],
    objects: Sequence[Mapping],
    names: Collection[str],
    attributes: Collection[str],
) -> list[Mention]:
    """Parses a caption into object phrases and matches each to a scene object.

    Args:
        tokens: Caption tokens.
        objects: The scene's objects (``name``, optional ``attributes``).
        names: Object-name vocabulary (e.g. every shape of the dataset).
        attributes: Attribute vocabulary (e.g. every size and colour of the dataset).

    Returns:
        One :class:`Mention` per name token, in caption order.
    """
    scene = [
        (str(o["name"]).lower(), {str(a).lower() for a in o.get("attributes") or ()})
        for o in objects
    ]
    mentions: list[Mention] = []
    pending: list[int] = []
    for index, token in enumerate(tokens):
        if token in names:
            said = {tokens[i] for i in pending}
            overlap = {
                k: len(said & attrs) for k, (name, attrs) in enumerate(scene) if name == token
            }
            if not overlap:
                referent, status = None, "absent"
            else:
                best = max(overlap.values())
                winners = [k for k, v in overlap.items() if v == best]
                referent, status = (
                    (winners[0], "matched") if len(winners) == 1 else (None, "ambiguous")
                )
            mentions.append(Mention(index, tuple(pending), referent, status))
            pending = []
        elif token in attributes:
            pending.append(index)
    return mentions


def _cell_edges(size: float, cells: int) -> np.ndarray:
    return np.arange(cells + 1, dtype=np.float64) * (size / cells)


def box_cell_fractions(
    bbox: Sequence[float], image_size: tuple[int, int], grid_size: tuple[int, int]
) -> np.ndarray:
    """Share of every grid cell's area that lies inside a box.

    Args:
        bbox: ``[x, y, w, h]`` in pixels of the original image.
        image_size: ``(width, height)`` of the original image.
        grid_size: ``(gh, gw)`` of the attention grid.

    Returns:
        (gh, gw) float64 array of values in [0, 1].
    """
    x, y, w, h = (float(v) for v in bbox)
    width, height = image_size
    gh, gw = grid_size
    xs, ys = _cell_edges(width, gw), _cell_edges(height, gh)
    # Overlap of [x, x + w) with every cell's [xs[c], xs[c + 1]), as a share of the cell.
    fx = np.clip(np.minimum(xs[1:], x + w) - np.maximum(xs[:-1], x), 0, None) / np.diff(xs)
    fy = np.clip(np.minimum(ys[1:], y + h) - np.maximum(ys[:-1], y), 0, None) / np.diff(ys)
    return np.outer(fy, fx)  # (gh, gw)


def box_cell_centres(
    bbox: Sequence[float], image_size: tuple[int, int], grid_size: tuple[int, int]
) -> np.ndarray:
    """Which grid cells have their centre inside a box: (gh, gw) bool array."""
    x, y, w, h = (float(v) for v in bbox)
    width, height = image_size
    gh, gw = grid_size
    cx = (np.arange(gw) + 0.5) * (width / gw)
    cy = (np.arange(gh) + 0.5) * (height / gh)
    inside_x = (cx >= x) & (cx < x + w)
    inside_y = (cy >= y) & (cy < y + h)
    return np.outer(inside_y, inside_x)


def score_map(
    alpha: np.ndarray, bbox: Sequence[float], image_size: tuple[int, int]
) -> dict[str, float | bool]:
    """Scores one attention map against one box.

    Args:
        alpha: (gh, gw) attention map (non-negative; normalised here).
        bbox: ``[x, y, w, h]`` in pixels of the original image.
        image_size: ``(width, height)`` of the original image.

    Returns:
        ``hit`` (peak cell centre in the box), ``in_box`` (share of the mass in the box) and
        their chance levels ``hit_chance`` and ``in_box_chance``, all shares in [0, 1].
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2:
        raise ValueError(f"attention map must be (gh, gw), got shape {alpha.shape}")
    grid = alpha.shape
    fractions = box_cell_fractions(bbox, image_size, grid)
    centres = box_cell_centres(bbox, image_size, grid)
    total = alpha.sum()
    peak = np.unravel_index(np.argmax(alpha), grid)
    return {
        "hit": bool(centres[peak]),
        "in_box": float((alpha * fractions).sum() / total) if total > 0 else 0.0,
        "hit_chance": float(centres.mean()),
        "in_box_chance": float(fractions.mean()),
    }


def image_grounding(
    words: Sequence[str],
    alphas: np.ndarray,
    objects: Sequence[Mapping],
    image_size: tuple[int, int],
    names: Collection[str],
    attributes: Collection[str],
    word: str = "shape",
) -> list[dict]:
    """Grounding of every object phrase of one caption.

    Args:
        words: Generated caption tokens.
        alphas: (len(words), gh, gw) attention maps, one per generated token.
        objects: The scene's objects with ``name``, ``attributes`` and ``bbox``.
        image_size: ``(width, height)`` of the original image.
        names: Object-name vocabulary.
        attributes: Attribute vocabulary.
        word: Which map to score: ``"shape"``, ``"first"`` or ``"phrase"``.

    Returns:
        One dict per phrase: ``word`` (the name token), ``index``, ``status`` and, when
        matched, ``object`` and the fields of :func:`score_map`.
    """
    alphas = np.asarray(alphas)
    if alphas.ndim != 3 or alphas.shape[0] < len(words):
        raise ValueError(
            f"need one (gh, gw) attention map per word: {len(words)} words, "
            f"maps of shape {alphas.shape}"
        )
    rows = []
    for mention in find_mentions(words, objects, names, attributes):
        row: dict = {
            "word": words[mention.name_index],
            "index": mention.name_index,
            "status": mention.status,
        }
        if mention.referent is not None:
            indices = list(mention.word_indices(word))
            attention = alphas[indices].mean(axis=0)  # (gh, gw)
            row["object"] = mention.referent
            row.update(score_map(attention, objects[mention.referent]["bbox"], image_size))
        rows.append(row)
    return rows


def _percent(values: list[float]) -> float | None:
    return 100.0 * float(np.mean(values)) if values else None


def grounding_scores(
    words: Sequence[Sequence[str]],
    alphas: Sequence[np.ndarray],
    objects: Sequence[Sequence[Mapping]],
    image_sizes: Sequence[tuple[int, int]],
    word: str = "shape",
    names: Collection[str] | None = None,
    attributes: Collection[str] | None = None,
) -> tuple[dict, list[list[dict]]]:
    """Pointing accuracy and attention-in-box over a set of captioned images.

    Args:
        words: Generated tokens per image.
        alphas: Attention maps per image, (len(words), gh, gw) each.
        objects: Ground-truth objects per image (``name``, ``attributes``, ``bbox``).
        image_sizes: ``(width, height)`` of every original image.
        word: Which map to score: ``"shape"``, ``"first"`` or ``"phrase"``.
        names: Object-name vocabulary (default: the names of all the given objects).
        attributes: Attribute vocabulary (default: the attributes of all the given objects).

    Returns:
        ``(summary, per_image)``. The summary holds, on the 0-100 scale (None when no word
        could be scored), ``pointing_accuracy``, ``pointing_accuracy_all_objects`` (over
        every scene object, see the module docstring; None when there are no objects),
        ``attention_in_box``, their chance levels ``pointing_chance`` and
        ``attention_in_box_chance``, ``pointing_accuracy_by_count`` (keyed by the number of
        objects in the scene), and the counts ``scored`` and ``excluded``
        (``{"absent": n, "ambiguous": n}``). ``per_image`` lists the rows of
        :func:`image_grounding` for every image.
    """
    if not len(words) == len(alphas) == len(objects) == len(image_sizes):
        raise ValueError(
            f"{len(words)} captions, {len(alphas)} attention sets, {len(objects)} object lists "
            f"and {len(image_sizes)} image sizes: they must match"
        )
    if word not in WORD_CHOICES:
        raise ValueError(f"unknown scored word {word!r}; choose from {WORD_CHOICES}")
    if names is None:
        names = {str(o["name"]).lower() for objs in objects for o in objs}
    if attributes is None:
        attributes = {
            str(a).lower() for objs in objects for o in objs for a in o.get("attributes") or ()
        }
    per_image = []
    fields: dict[str, list[float]] = {
        "hit": [],
        "in_box": [],
        "hit_chance": [],
        "in_box_chance": [],
    }
    hits_by_count: dict[int, list[float]] = {}
    excluded = {"absent": 0, "ambiguous": 0}
    object_hits: list[float] = []  # one per scene object: named and pointed at, or a miss
    for tokens, maps, objs, size in zip(words, alphas, objects, image_sizes, strict=True):
        rows = image_grounding(tokens, maps, objs, size, names, attributes, word)
        per_image.append(rows)
        first_mention: dict[int, float] = {}
        for row in rows:
            if row["status"] == "matched":
                first_mention.setdefault(row["object"], float(row["hit"]))
        object_hits.extend(first_mention.get(i, 0.0) for i in range(len(objs)))
        for row in rows:
            if row["status"] != "matched":
                excluded[row["status"]] += 1
                continue
            for key, values in fields.items():
                values.append(float(row[key]))
            hits_by_count.setdefault(len(objs), []).append(float(row["hit"]))
    summary = {
        "pointing_accuracy": _percent(fields["hit"]),
        "pointing_accuracy_all_objects": _percent(object_hits),
        "attention_in_box": _percent(fields["in_box"]),
        "pointing_chance": _percent(fields["hit_chance"]),
        "attention_in_box_chance": _percent(fields["in_box_chance"]),
        "pointing_accuracy_by_count": {
            str(n): _percent(hits_by_count[n]) for n in sorted(hits_by_count)
        },
        "scored": len(fields["hit"]),
        "excluded": excluded,
    }
    return summary, per_image
