"""Tests for captioner.data.text."""

import pytest

from captioner.data.text import PUNCTUATION, tokenize


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A Dog runs.", ["a", "dog", "runs"]),
        ("The dog's ball!", ["the", "dog", "'s", "ball"]),
        ("I don't know -- really...", ["i", "do", "n't", "know", "really"]),
        (
            "They're here; we've gone. I'm ok",
            ["they", "'re", "here", "we", "'ve", "gone", "i", "'m", "ok"],
        ),
        ("she'll say he'd go", ["she", "'ll", "say", "he", "'d", "go"]),
        ("A black-and-white cat, (sitting)", ["a", "black-and-white", "cat", "sitting"]),
        ("\"Quoted\" ``text'' [x] {y}", ["quoted", "text", "x", "y"]),
        ("dogs' toys", ["dogs", "toys"]),
        ("the dog\u2019s bone", ["the", "dog", "'s", "bone"]),
        ("  spaced\tout\n words ", ["spaced", "out", "words"]),
        ("1,000 dogs and 3.5 cats", ["1,000", "dogs", "and", "3.5", "cats"]),
        ("", []),
        ("?!.,:;", []),
    ],
)
def test_tokenize(text, expected):
    assert tokenize(text) == expected
    assert tokenize(" ".join(expected)) == expected  # pre-tokenised text is stable


@pytest.mark.parametrize(
    "text", ["Café naïve", "e\u0301", "😀 dog", "\ud800", "\x00\u200b", "日本語の文", "ǅ ß İ"]
)
def test_tokenize_any_unicode(text):
    tokens = tokenize(text)
    assert all(isinstance(t, str) and t for t in tokens)
    assert not PUNCTUATION & set(tokens)


def test_tokenize_unicode_normalised():
    assert tokenize("Cafe\u0301") == tokenize("Caf\u00e9") == ["caf\u00e9"]


def test_tokenize_deterministic():
    text = "Two Men's bikes, leaning on a wall."
    once = tokenize(text)
    assert once == tokenize(text) == ["two", "men", "'s", "bikes", "leaning", "on", "a", "wall"]
