"""Tests for captioner.evaluation.grounding with hand-made attention maps and boxes."""

import numpy as np
import pytest

from captioner.evaluation.grounding import (
    box_cell_centres,
    box_cell_fractions,
    find_mentions,
    grounding_scores,
    image_grounding,
    score_map,
)

NAMES = {"circle", "square", "star"}
ATTRS = {"small", "large", "red", "blue"}
SIZE = (128, 128)  # 4 x 4 grid below: 32 px cells


def obj(name, size, colour, bbox):
    return {"name": name, "attributes": [size, colour], "bbox": bbox}


def peak_at(row, col, grid=(4, 4)):
    alpha = np.full(grid, 0.01)
    alpha[row, col] = 1.0
    return alpha / alpha.sum()


def test_box_cell_fractions_and_centres():
    # Box x 16..48, y 0..32 on 32 px cells: half of cell (0, 0), half of cell (0, 1).
    fractions = box_cell_fractions([16, 0, 32, 32], SIZE, (4, 4))
    expected = np.zeros((4, 4))
    expected[0, 0] = expected[0, 1] = 0.5
    np.testing.assert_allclose(fractions, expected)
    # Cell centres are at 16, 48, 80, 112: x = 16 is inside [16, 48), 48 is not.
    centres = box_cell_centres([16, 0, 32, 32], SIZE, (4, 4))
    assert centres.sum() == 1 and centres[0, 0]
    # The mean of the fractions is the box's area share of the image.
    fractions = box_cell_fractions([10, 5, 30, 40], (100, 50), (5, 7))
    assert fractions.mean() == pytest.approx(30 * 40 / (100 * 50))


def test_box_cell_geometry_follows_non_square_images():
    # A 200 x 100 image on a 2 x 2 grid: cells are 100 x 50 px.
    fractions = box_cell_fractions([100, 50, 100, 50], (200, 100), (2, 2))
    np.testing.assert_allclose(fractions, [[0, 0], [0, 1]])


def test_score_map_hit_mass_and_chance():
    box = [64, 64, 64, 64]  # the bottom-right 2 x 2 cells of the 4 x 4 grid
    alpha = np.zeros((4, 4))
    alpha[3, 3], alpha[0, 0] = 0.6, 0.4
    scores = score_map(alpha, box, SIZE)
    assert scores["hit"] is True
    assert scores["in_box"] == pytest.approx(0.6)
    assert scores["hit_chance"] == pytest.approx(4 / 16)
    assert scores["in_box_chance"] == pytest.approx(0.25)
    alpha[0, 0] = 0.7  # the peak moves out of the box; mass share is 0.6 / 1.3
    scores = score_map(alpha, box, SIZE)
    assert scores["hit"] is False
    assert scores["in_box"] == pytest.approx(0.6 / 1.3)


def test_score_map_uniform_attention_scores_its_chance_level():
    box = [0, 0, 40, 40]
    scores = score_map(np.full((4, 4), 1 / 16), box, SIZE)
    assert scores["in_box"] == pytest.approx(scores["in_box_chance"])
    assert scores["in_box_chance"] == pytest.approx(40 * 40 / 128**2)


def test_find_mentions_matches_by_shape_then_attributes():
    objects = [
        obj("circle", "large", "red", [0, 0, 10, 10]),
        obj("circle", "small", "blue", [50, 0, 10, 10]),
        obj("square", "small", "red", [90, 0, 10, 10]),
    ]
    tokens = "a small blue circle to the left of a large red star and a blue circle".split()
    mentions = find_mentions(tokens, objects, NAMES, ATTRS)
    assert [(m.name_index, m.attribute_indices, m.referent, m.status) for m in mentions] == [
        (3, (1, 2), 1, "matched"),
        (11, (9, 10), None, "absent"),  # no star in the scene
        (15, (14,), 1, "matched"),  # "blue" settles which circle
    ]
    # "small red circle": each circle shares one attribute -> ambiguous, not guessed.
    mentions = find_mentions("a small red circle".split(), objects, NAMES, ATTRS)
    assert mentions[0].status == "ambiguous" and mentions[0].referent is None
    # A wrong attribute still finds the only square.
    mentions = find_mentions("a large blue square".split(), objects, NAMES, ATTRS)
    assert mentions[0].referent == 2
    # Identical duplicates are ambiguous.
    twins = [obj("star", "small", "red", [0, 0, 5, 5]), obj("star", "small", "red", [9, 9, 5, 5])]
    assert find_mentions(["a", "small", "red", "star"], twins, NAMES, ATTRS)[0].status == (
        "ambiguous"
    )


def test_mention_word_indices():
    (mention,) = find_mentions("a large red circle".split(), [], NAMES, ATTRS)
    assert mention.word_indices("shape") == (3,)
    assert mention.word_indices("first") == (1,)
    assert mention.word_indices("phrase") == (1, 2, 3)
    (bare,) = find_mentions(["circle"], [], NAMES, ATTRS)
    assert bare.word_indices("first") == (0,)
    with pytest.raises(ValueError, match="unknown scored word"):
        mention.word_indices("colour")


def test_image_grounding_scores_the_chosen_word():
    words = "a large red circle to the left of a small blue square".split()
    objects = [
        obj("circle", "large", "red", [0, 0, 64, 64]),  # top-left 2 x 2 cells
        obj("square", "small", "blue", [96, 96, 32, 32]),  # bottom-right cell
    ]
    alphas = np.stack([peak_at(3, 3)] * len(words))
    alphas[3] = peak_at(0, 0)  # "circle" looks at the circle, its size word does not
    alphas[11] = peak_at(3, 3)  # "square" looks at the square
    rows = image_grounding(words, alphas, objects, SIZE, NAMES, ATTRS, word="shape")
    assert [(r["word"], r["object"], r["hit"]) for r in rows] == [
        ("circle", 0, True),
        ("square", 1, True),
    ]
    rows = image_grounding(words, alphas, objects, SIZE, NAMES, ATTRS, word="first")
    assert [r["hit"] for r in rows] == [False, True]
    with pytest.raises(ValueError, match="one \\(gh, gw\\) attention map per word"):
        image_grounding(words, alphas[:3], objects, SIZE, NAMES, ATTRS)


def test_grounding_scores_summary_counts_and_exclusions():
    circle = obj("circle", "large", "red", [0, 0, 64, 64])  # 4 of 16 cells, area share 1/4
    square = obj("square", "small", "blue", [96, 96, 32, 32])  # 1 cell, area share 1/16
    words = [
        "a large red circle".split(),  # hit
        "a large red circle and a small blue square".split(),  # circle miss, square hit
        "a small red star".split(),  # absent: excluded
    ]
    alphas = [
        np.stack([peak_at(0, 1)] * 4),
        np.stack([peak_at(3, 3)] * 9),
        np.stack([peak_at(0, 0)] * 4),
    ]
    objects = [[circle], [circle, square], [circle]]
    summary, per_image = grounding_scores(
        words, alphas, objects, [SIZE] * 3, names=NAMES, attributes=ATTRS
    )
    assert summary["pointing_accuracy"] == pytest.approx(100 * 2 / 3)
    # over all 4 scene objects: the first circle hit, the second missed, the square hit, the
    # third circle not named (the caption's "red star" is another object)
    assert summary["pointing_accuracy_all_objects"] == pytest.approx(100 * 2 / 4)
    assert summary["pointing_accuracy_by_count"] == pytest.approx({"1": 100.0, "2": 50.0})
    assert summary["scored"] == 3
    assert summary["excluded"] == {"absent": 1, "ambiguous": 0}
    assert summary["pointing_chance"] == pytest.approx(100 * (4 / 16 + 4 / 16 + 1 / 16) / 3)
    assert summary["attention_in_box_chance"] == pytest.approx(100 * (1 / 4 + 1 / 4 + 1 / 16) / 3)
    in_box_peak = (1.0) / (1.0 + 15 * 0.01)  # the peak cell's share of the map
    in_box_one_cell_off = (4 * 0.01) / 1.15  # circle box holds 4 low cells when peak is away
    expected = [in_box_peak + 3 * 0.01 / 1.15, in_box_one_cell_off, in_box_peak]
    assert summary["attention_in_box"] == pytest.approx(100 * np.mean(expected))
    assert [len(rows) for rows in per_image] == [1, 2, 1]
    assert per_image[2][0]["status"] == "absent" and "hit" not in per_image[2][0]


def test_grounding_scores_validates_inputs():
    with pytest.raises(ValueError, match="must match"):
        grounding_scores([["a"]], [], [[]], [SIZE])
    with pytest.raises(ValueError, match="unknown scored word"):
        grounding_scores([], [], [], [], word="verb")
    summary, _ = grounding_scores([], [], [], [])
    assert summary["pointing_accuracy"] is None and summary["scored"] == 0
    assert summary["pointing_accuracy_all_objects"] is None


def test_naming_fewer_objects_cannot_raise_the_all_objects_score():
    circle = obj("circle", "large", "red", [0, 0, 64, 64])
    square = obj("square", "small", "blue", [96, 96, 32, 32])
    objects = [[circle, square]]
    both = "a large red circle and a small blue square".split()
    # the circle's map misses, the square's hits
    both_maps = np.stack([peak_at(3, 3)] * len(both))
    only_square = "a small blue square".split()
    square_maps = np.stack([peak_at(3, 3)] * len(only_square))
    full, _ = grounding_scores([both], [both_maps], objects, [SIZE], names=NAMES, attributes=ATTRS)
    terse, _ = grounding_scores(
        [only_square], [square_maps], objects, [SIZE], names=NAMES, attributes=ATTRS
    )
    # Naming only the easy object doubles the named-objects score...
    assert (full["pointing_accuracy"], terse["pointing_accuracy"]) == (50.0, 100.0)
    # ...but not the score over all the scene's objects.
    assert full["pointing_accuracy_all_objects"] == terse["pointing_accuracy_all_objects"] == 50.0
    # An ambiguous mention counts as a miss there.
    twins = [[circle, circle]]
    named, _ = grounding_scores(
        [["a", "large", "red", "circle"]], [np.stack([peak_at(0, 0)] * 4)], twins, [SIZE],
        names=NAMES, attributes=ATTRS,
    )  # fmt: skip
    assert named["excluded"]["ambiguous"] == 1 and named["pointing_accuracy_all_objects"] == 0.0
