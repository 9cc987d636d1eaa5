"""Caption tokenisation in the style of the coco-caption PTB tokenizer."""

from __future__ import annotations

import re
import unicodedata

# Tokens the coco-caption PTBTokenizer drops, plus the raw characters they come from.
PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-"]
    + ["--", "...", ";", '"', "(", ")", "[", "]", "{", "}"]
    + ["-lrb-", "-rrb-", "-lcb-", "-rcb-"]
)

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
# A word: alphanumeric runs joined by inner hyphens/apostrophes/periods, or a
# number with thousands separators, a detached clitic ("'s"); anything else is a
# single-character token.
_TOKEN_RE = re.compile(
    r"\d+(?:,\d{3})+(?:\.\d+)?|[^\W_]+(?:[-'.][^\W_]+)*|'(?:s|re|ve|ll|d|m)\b|\S"
)
_CLITIC_RE = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def tokenize(text: str) -> list[str]:
    """Tokenises a caption PTB-style: lower-case, clitics split, punctuation dropped.

    Args:
        text: Raw caption text (any Unicode).

    Returns:
        The list of tokens, e.g. ``"The dog's ball."`` -> ``["the", "dog", "'s", "ball"]``.
    """
    text = unicodedata.normalize("NFC", text).translate(_QUOTES).lower()
    tokens = []
    for tok in _TOKEN_RE.findall(text):
        match = _CLITIC_RE.match(tok)
        parts = match.groups() if match else (tok,)
        tokens.extend(p for p in parts if p not in PUNCTUATION)
    return tokens
