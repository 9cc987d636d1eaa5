"""Tests for the in-process CIDEr-D scorer, against hand values and pycocoevalcap's."""

import importlib.util
import math

import pytest

from captioner.evaluation.cider import CiderD, cider_d, ngram_counts

REFERENCES = [
    [
        "a man rides a brown horse on the beach".split(),
        "a person riding a horse along the sea".split(),
        "man on a horse near the water".split(),
    ],
    [
        "two dogs play in the snow".split(),
        "a black dog and a white dog run through snow".split(),
    ],
    [
        "a child in a red shirt jumps into a pool".split(),
        "a young boy jumps into the water".split(),
        "a boy in red leaps into a swimming pool".split(),
    ],
]
CANDIDATES = [
    "a man rides a horse on the beach".split(),
    "two dogs run in the snow".split(),
    "a boy a boy a boy jumps".split(),
]


def test_ngram_counts():
    counts = ngram_counts("a b a".split(), max_n=2)
    assert counts == {("a",): 2, ("b",): 1, ("a", "b"): 1, ("b", "a"): 1}


def test_a_caption_found_in_no_other_image_scores_high_and_unrelated_scores_zero():
    scorer = CiderD(REFERENCES)
    assert scorer.score("two dogs play in the snow".split(), REFERENCES[1]) > 2.0
    assert scorer.score("purple elephants".split(), REFERENCES[1]) == 0.0
    assert scorer.score("anything".split(), []) == 0.0


def test_repeating_words_does_not_pay():
    scorer = CiderD(REFERENCES)
    once = scorer.score("a boy jumps into a pool".split(), REFERENCES[2])
    repeated = scorer.score("a boy jumps into a pool pool pool pool".split(), REFERENCES[2])
    assert repeated < once


def test_document_frequency_and_idf():
    scorer = CiderD(REFERENCES)
    assert scorer.document_frequency[("a",)] == 3  # in every image's references
    assert scorer.document_frequency[("snow",)] == 1
    assert scorer.log_images == pytest.approx(math.log(3))


@pytest.mark.skipif(
    importlib.util.find_spec("pycocoevalcap") is None, reason="needs the coco extra"
)
def test_equals_pycocoevalcap_cider():
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [" ".join(c)] for i, c in enumerate(CANDIDATES)}
    expected, expected_per_image = Cider().compute_score(gts, res)
    corpus, per_image = cider_d(CANDIDATES, REFERENCES)
    assert corpus == pytest.approx(expected, abs=1e-6)
    assert per_image == pytest.approx(list(expected_per_image), abs=1e-6)
