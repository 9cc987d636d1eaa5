"""Does attention look at what each word names, or at the same few cells for every word?

Two scores for datasets without object boxes (real photos), from the free-running
captions' attention maps:

- **sink share**: for one image, take the `top` cells with the most attention over all its
  words (the mean of its maps), then the share of each word's map that falls on those
  cells, averaged over the words. A model that looks at the same few cells whatever it says
  ("attention sinks") scores near 1; uniform attention scores `top / L`, reported beside
  it as `attention_sink_share_uniform`. Lower is better. `top` is 5% of the cells, at
  least one (5 of a 9×9 grid).
- **noun map distance**: the mean total-variation distance, 0.5 · Σ_i |α_a,i − α_b,i|
  in [0, 1], between the maps of every pair of distinct nouns of a caption ("man" and
  "bench" in "a man sits on a bench"), over the captions with at least two. 0 means every
  noun looked at the same place; higher is better. Nouns are the caption words found in a
  list of common concrete nouns shipped with the package (`resources/caption_nouns.txt`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Collection, Sequence
from importlib import resources

import numpy as np

TOP_CELL_SHARE = 0.05


@functools.cache
def caption_nouns() -> frozenset[str]:
    """The shipped list of concrete nouns that captions name."""
    text = resources.files("captioner").joinpath("resources/caption_nouns.txt").read_text()
    lines = (line for line in text.splitlines() if not line.startswith("#"))
    return frozenset(word for line in lines for word in line.split())


def top_cells(num_cells: int) -> int:
    """How many cells the sink share counts: 5% of the grid, at least one."""
    return max(1, math.ceil(TOP_CELL_SHARE * num_cells))


def sink_share(alphas: np.ndarray) -> float:
    """The mean share of a caption's word maps on the image's most-attended cells.

    Args:
        alphas: (T, L) or (T, gh, gw) attention maps of one caption's words (T >= 1).
    """
    maps = np.asarray(alphas, np.float64).reshape(len(alphas), -1)  # (T, L)
    top = np.argsort(-maps.mean(axis=0), kind="stable")[: top_cells(maps.shape[1])]
    return float(maps[:, top].sum(axis=1).mean())


def noun_map_distance(
    words: Sequence[str], alphas: np.ndarray, nouns: Collection[str]
) -> float | None:
    """Mean total-variation distance between the maps of a caption's distinct nouns.

    Each noun's first occurrence is used. None when the caption has fewer than two.
    """
    maps = np.asarray(alphas, np.float64).reshape(len(alphas), -1)
    first: dict[str, int] = {}
    for index, word in enumerate(words):
        if word in nouns:
            first.setdefault(word, index)
    if len(first) < 2:
        return None
    pairs = itertools.combinations(first.values(), 2)
    return float(np.mean([0.5 * np.abs(maps[a] - maps[b]).sum() for a, b in pairs]))


def attention_focus_scores(
    words: Sequence[Sequence[str]],
    alphas: Sequence[np.ndarray],
    nouns: Collection[str] | None = None,
) -> dict:
    """Sink share and noun map distance over a set of captions, on the 0-100 scale.

    Returns:
        `attention_sink_share` and `attention_sink_share_uniform` (None without words),
        `noun_map_distance` (None without a caption of two nouns) and
        `noun_map_distance_captions`, the number of captions it averages.
    """
    nouns = caption_nouns() if nouns is None else nouns
    shares, uniform, distances = [], [], []
    for caption_words, maps in zip(words, alphas, strict=True):
        if not len(caption_words):
            continue
        maps = np.asarray(maps)[: len(caption_words)]
        cells = int(np.prod(maps.shape[1:]))
        shares.append(sink_share(maps))
        uniform.append(top_cells(cells) / cells)
        distance = noun_map_distance(caption_words, maps, nouns)
        if distance is not None:
            distances.append(distance)

    def percent(values):
        return 100.0 * float(np.mean(values)) if values else None

    return {
        "attention_sink_share": percent(shares),
        "attention_sink_share_uniform": percent(uniform),
        "noun_map_distance": percent(distances),
        "noun_map_distance_captions": len(distances),
    }
