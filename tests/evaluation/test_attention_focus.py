"""Tests for captioner.evaluation.attention_focus with hand-made attention maps."""

import numpy as np
import pytest

from captioner.evaluation.attention_focus import (
    attention_focus_scores,
    caption_nouns,
    noun_map_distance,
    sink_share,
    top_cells,
)


def one_hot_map(cell, cells=81):
    m = np.zeros(cells)
    m[cell] = 1.0
    return m


def test_top_cells_is_five_percent_of_the_grid():
    assert (top_cells(81), top_cells(64), top_cells(289), top_cells(4)) == (5, 4, 15, 1)


def test_the_same_cell_for_every_word_is_a_full_sink():
    maps = np.stack([one_hot_map(7)] * 4)
    assert sink_share(maps) == pytest.approx(1.0)


def test_uniform_attention_scores_the_uniform_share():
    maps = np.full((3, 9, 9), 1 / 81)
    assert sink_share(maps) == pytest.approx(5 / 81)


def test_words_looking_at_different_cells_share_little():
    # 20 words, each on its own cell: the top 5 cells of the mean hold one word's map each
    maps = np.stack([one_hot_map(i) for i in range(20)])
    assert sink_share(maps) == pytest.approx(5 / 20)


def test_noun_map_distance_pairs_distinct_nouns():
    words = ["a", "man", "sits", "on", "a", "bench", "man"]
    maps = np.stack([one_hot_map(i % 3) for i in range(len(words))])
    nouns = {"man", "bench"}
    # "man" (index 1, cell 1) against "bench" (index 5, cell 2): disjoint maps
    assert noun_map_distance(words, maps, nouns) == pytest.approx(1.0)
    same = np.stack([one_hot_map(0)] * len(words))
    assert noun_map_distance(words, same, nouns) == pytest.approx(0.0)
    assert noun_map_distance(["a", "man", "runs"], maps[:3], nouns) is None


def test_scores_over_captions():
    words = [["a", "dog", "on", "grass"], ["a", "dog"]]
    alphas = [
        np.stack([one_hot_map(0), one_hot_map(1), one_hot_map(0), one_hot_map(2)]),
        np.stack([one_hot_map(3), one_hot_map(3)]),
    ]
    scores = attention_focus_scores(words, alphas)
    assert scores["noun_map_distance"] == pytest.approx(100.0)  # dog (cell 1) vs grass (2)
    assert scores["noun_map_distance_captions"] == 1
    assert scores["attention_sink_share"] == pytest.approx(100 * (1.0 + 1.0) / 2)
    assert scores["attention_sink_share_uniform"] == pytest.approx(100 * 5 / 81)
    assert {"dog", "grass", "man", "circle"} <= caption_nouns()
