"""Tests for captioner.evaluation.metrics."""

import math
import random
import warnings
from collections import Counter

import pytest
from nltk.translate import bleu_score as nltk_bleu

from captioner.evaluation.metrics import (
    corpus_bleu,
    format_table,
    object_accuracy,
    object_key,
    objects_correct,
    parse_objects,
    sentence_bleu,
)

NLTK_WEIGHTS = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25,) * 4}


def t(text):
    return text.split()


# ---------------------------------------------------------------- BLEU: hand-computed


def test_bleu_perfect_match_is_100():
    refs = [[t("a man rides a red bike"), t("someone on a bicycle")]]
    assert corpus_bleu([t("a man rides a red bike")], refs) == pytest.approx([100.0] * 4)
    assert sentence_bleu(t("a man rides a red bike"), refs[0]) == pytest.approx([100.0] * 4)


def test_bleu_clips_counts_by_max_reference_count():
    # "the" occurs at most twice in one reference: 2 of 4 unigrams are correct.
    refs = [[t("the cat the mat"), t("the dog")]]
    assert corpus_bleu([t("the the the the")], refs, max_n=1) == pytest.approx([50.0])


def test_bleu_brevity_penalty():
    # All 1-3-grams match, hypothesis is 3 long against a 6-long reference.
    bleu = corpus_bleu([t("the cat sat")], [[t("the cat sat on the mat")]], max_n=3)
    assert bleu == pytest.approx([100 * math.exp(1 - 6 / 3)] * 3, rel=1e-9)


def test_bleu_closest_reference_length_ties_go_to_shorter():
    hyp = t("a b c d")
    # Lengths 3 and 5 are equally close to 4: the shorter (3) wins, so no penalty.
    assert corpus_bleu([hyp], [[t("a b c"), t("a b c d e")]], max_n=1) == pytest.approx([100.0])
    assert corpus_bleu([hyp], [[t("a b c d e"), t("a b c")]], max_n=1) == pytest.approx([100.0])
    # Lengths 2 and 5: 5 is closest, so the penalty exp(1 - 5/4) applies.
    bleu = corpus_bleu([hyp], [[t("a b"), t("a b c d e")]], max_n=1)
    assert bleu == pytest.approx([100 * math.exp(1 - 5 / 4)], rel=1e-9)


def test_bleu_corpus_pools_counts_rather_than_averaging():
    hyps = [t("a b"), t("x y z w")]
    refs = [[t("a b")], [t("x q z w")]]
    # Unigrams: (2 + 3) / (2 + 4); bigrams: (1 + 1) / (1 + 3).
    expected_b2 = 100 * math.sqrt(5 / 6 * 2 / 4)
    assert corpus_bleu(hyps, refs, max_n=2) == pytest.approx([500 / 6, expected_b2], rel=1e-9)


def test_bleu_result_length_follows_max_n():
    refs = [[t("a b c")]]
    for n in (1, 2, 3, 4, 6):
        assert len(corpus_bleu([t("a b c")], refs, max_n=n)) == n
        assert len(sentence_bleu(t("a b c"), refs[0], max_n=n)) == n


def test_sentence_bleu_equals_single_image_corpus_bleu():
    hyp, refs = t("a dog runs on the grass"), [t("a dog running on grass"), t("the dog runs")]
    assert sentence_bleu(hyp, refs) == pytest.approx(corpus_bleu([hyp], [refs]), rel=1e-12)


def test_sentence_bleu_uses_coco_smoothing_for_short_hypotheses():
    # Two tokens, no 3/4-grams: coco-caption smooths guess=0 as (0 + 1e-15) / (0 + 1e-9).
    b1, b2, b3, b4 = sentence_bleu(t("a b"), [t("a b")])
    assert b1 == pytest.approx(100.0) and b2 == pytest.approx(100.0)
    assert b3 == pytest.approx(100 * (1e-6) ** (1 / 3), rel=1e-6)
    assert b4 == pytest.approx(100 * (1e-12) ** (1 / 4), rel=1e-6)


def test_bleu_empty_hypotheses_do_not_crash():
    assert corpus_bleu([[]], [[t("a b c")]]) == pytest.approx([0.0] * 4, abs=1e-9)
    assert sentence_bleu([], [t("a b c")]) == pytest.approx([0.0] * 4, abs=1e-9)
    mixed = corpus_bleu([[], t("a b c d")], [[t("x y")], [t("a b c d")]])
    assert all(0 < b < 100 for b in mixed)
    assert corpus_bleu([], []) == pytest.approx([0.0] * 4, abs=1e-9)


def test_bleu_input_validation():
    with pytest.raises(ValueError):
        corpus_bleu([t("a")], [[t("a")], [t("b")]])
    with pytest.raises(ValueError):
        corpus_bleu([t("a")], [[]])
    with pytest.raises(ValueError):
        sentence_bleu(t("a"), [])
    with pytest.raises(ValueError):
        corpus_bleu([t("a")], [[t("a")]], max_n=0)
    with pytest.raises(TypeError):
        corpus_bleu(["a b"], [[t("a b")]])  # a raw string, not tokens


# ---------------------------------------------------------------- BLEU: against nltk


def _nltk_corpus_bleu(hyps, refs, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero-count orders
        return 100 * nltk_bleu.corpus_bleu(refs, hyps, weights=NLTK_WEIGHTS[n])


def _random_corpus(seed, size=20):
    """Hypotheses are noisy copies of a reference, so every n-gram order matches."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(12)]
    hyps, refs = [], []
    for _ in range(size):
        img_refs = [
            [rng.choice(vocab) for _ in range(rng.randint(5, 14))] for _ in range(rng.randint(1, 5))
        ]
        hyp = list(rng.choice(img_refs))
        for _ in range(rng.randint(0, 3)):
            op = rng.random()
            if op < 0.4 and len(hyp) > 4:
                del hyp[rng.randrange(len(hyp))]
            elif op < 0.7:
                hyp.insert(rng.randrange(len(hyp) + 1), rng.choice(vocab))
            else:
                hyp[rng.randrange(len(hyp))] = rng.choice(vocab)
        hyps.append(hyp)
        refs.append(img_refs)
    return hyps, refs


@pytest.mark.parametrize("seed", range(5))
def test_bleu_matches_nltk_when_every_order_matches(seed):
    hyps, refs = _random_corpus(seed)
    ours = corpus_bleu(hyps, refs)
    assert 0 < ours[3] < 100
    for n in range(1, 5):
        assert ours[n - 1] == pytest.approx(_nltk_corpus_bleu(hyps, refs, n), rel=1e-9, abs=1e-9)


def test_bleu_matches_nltk_brevity_and_closest_length():
    # Short hypotheses force a brevity penalty; reference lengths 4 and 6 tie for a 5-token
    # hypothesis (both pick 4) and a 4-token hypothesis is closest to its 3-token reference.
    hyps = [t("a b c d e"), t("p q r s"), t("x y z w v")]
    refs = [
        [t("a b c d e f"), t("a b c d")],
        [t("p q r"), t("p q r s t u v w")],
        [t("x y z w v u t s r q")],
    ]
    ours = corpus_bleu(hyps, refs)
    assert ours[0] == pytest.approx(100 * math.exp(1 - 17 / 14), rel=1e-9)
    for n in range(1, 5):
        assert ours[n - 1] == pytest.approx(_nltk_corpus_bleu(hyps, refs, n), rel=1e-9)


def test_bleu_short_hypothesis_follows_coco_not_nltk():
    # "p q r" has no 4-grams: coco-caption adds 0 to the 4-gram denominator, nltk adds 1.
    hyps = [t("a b c d e"), t("p q r")]
    refs = [[t("a b c d e")], [t("p q r")]]
    ours = corpus_bleu(hyps, refs)
    assert ours == pytest.approx([100.0] * 4)
    assert _nltk_corpus_bleu(hyps, refs, 4) == pytest.approx(100 * (2 / 3) ** 0.25, rel=1e-9)


def test_bleu_zero_match_order_is_tiny_where_nltk_is_zero():
    hyps = [t("a b c d e"), t("f g h i j")]
    refs = [[t("a b x c d y e")], [t("f g y h i z j")]]  # bigrams match, no 3/4-grams
    ours = corpus_bleu(hyps, refs)
    for n in (1, 2):
        assert ours[n - 1] == pytest.approx(_nltk_corpus_bleu(hyps, refs, n), rel=1e-9)
    for n in (3, 4):
        assert _nltk_corpus_bleu(hyps, refs, n) == pytest.approx(0.0, abs=1e-12)
        assert 0 < ours[n - 1] < 0.1


# ---------------------------------------------------------------- object accuracy


def obj(name, *attrs):
    return {"name": name, "attributes": list(attrs), "bbox": [0, 0, 1, 1]}


NAMES = {"circle", "square"}
ATTRS = {"small", "large", "red", "blue"}


def test_object_key_is_order_independent():
    assert object_key(obj("circle", "red", "large")) == (("large", "red"), "circle")
    assert object_key(obj("circle", "large", "red")) == object_key(obj("circle", "red", "large"))
    assert object_key({"name": "square"}) == ((), "square")


def test_parse_objects():
    tokens = t("a large red circle and a small blue square next to a red circle")
    assert parse_objects(tokens, NAMES, ATTRS) == Counter(
        {(("large", "red"), "circle"): 1, (("blue", "small"), "square"): 1, (("red",), "circle"): 1}
    )
    # Attributes after the last name are dropped; unknown words are ignored.
    assert parse_objects(t("a huge circle that is red"), NAMES, ATTRS) == Counter(
        {((), "circle"): 1}
    )
    assert parse_objects([], NAMES, ATTRS) == Counter()


def test_parse_objects_keys_match_object_key():
    parsed = parse_objects(t("a red large circle"), NAMES, ATTRS)
    assert parsed == Counter([object_key(obj("circle", "large", "red"))])


def _acc(caption, objects):
    return object_accuracy([t(caption)], [objects])["overall"]


def test_object_accuracy_single_caption_cases():
    truth = [obj("circle", "large", "red"), obj("square", "small", "blue")]
    assert _acc("a large red circle and a small blue square", truth) == 100.0
    assert _acc("a small blue square and a red large circle", truth) == 100.0  # order irrelevant
    assert _acc("a large blue circle and a small blue square", truth) == 0.0  # wrong colour
    assert _acc("a large red circle", truth) == 0.0  # missing object
    assert _acc("a large red circle a small blue square and a red circle", truth) == 0.0  # extra
    assert _acc("a large red circle and a blue square", truth) == 0.0  # missing attribute


def test_object_accuracy_duplicates_are_multisets():
    truth = [obj("circle", "small", "red"), obj("circle", "small", "red")]
    assert _acc("two shapes : a small red circle and a small red circle", truth) == 100.0
    assert _acc("a small red circle", truth) == 0.0
    assert _acc("a small red circle a small red circle a small red circle", truth) == 0.0


def test_object_accuracy_by_count():
    one = [obj("circle", "red")]
    two = [obj("circle", "red"), obj("square", "blue")]
    three = [obj("circle", "red"), obj("square", "blue"), obj("square", "red")]
    hyps = [
        t("a red circle"),  # 1: right
        t("a blue circle"),  # 1: wrong
        t("a blue square and a red circle"),  # 2: right
        t("a red circle , a blue square and a red square"),  # 3: right
        t("a red circle and a blue square"),  # 3: wrong
    ]
    result = object_accuracy(hyps, [one, one, two, three, three])
    assert result["overall"] == pytest.approx(60.0)
    assert result["by_count"] == pytest.approx({"1": 50.0, "2": 100.0, "3": 50.0})
    assert list(result["by_count"]) == ["1", "2", "3"]
    assert result["count"] == 5


def test_objects_correct_per_caption():
    one = [obj("circle", "red")]
    two = [obj("circle", "red"), obj("square", "blue")]
    hyps = [t("a red circle"), t("a blue circle"), t("a blue square and a red circle")]
    assert objects_correct(hyps, [one, one, two]) == [True, False, True]
    assert objects_correct([], []) == []
    with pytest.raises(ValueError):
        objects_correct([t("a red circle")], [])


def test_object_accuracy_edge_cases():
    assert object_accuracy([], []) == {"overall": 0.0, "by_count": {}, "count": 0}
    with pytest.raises(ValueError):
        object_accuracy([t("a red circle")], [])


# ---------------------------------------------------------------- format_table


def test_format_table():
    table = format_table(
        {
            "bleu_4": 23.456,
            "object_accuracy": {"overall": 60.0, "by_count": {"1": 50.0, "2": 100.0}, "count": 5},
            "split": "test",
        }
    )
    lines = table.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert lines[0].split() == ["metric", "value"]
    assert rows == {
        "bleu_4": "23.46",
        "object_accuracy": "60.00",
        "object_accuracy[1]": "50.00",
        "object_accuracy[2]": "100.00",
        "object_accuracy[count]": "5",
        "split": "test",
    }
    assert len({len(line) for line in lines}) == 1  # aligned columns
