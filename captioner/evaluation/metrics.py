"""Caption metrics: coco-caption-compatible BLEU, object accuracy and table printing."""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

_TINY = 1e-15  # coco-caption's numerator smoothing
_SMALL = 1e-9  # coco-caption's denominator smoothing


def _ngrams(tokens: Sequence[str], max_n: int) -> Counter:
    """Counts all n-grams of orders 1..max_n."""
    tokens = tuple(tokens)
    return Counter(
        tokens[i : i + n] for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)
    )


def _check_tokens(tokens: Sequence[str], what: str) -> None:
    if isinstance(tokens, str):
        raise TypeError(f"{what} must be a sequence of tokens, not a str: {tokens!r}")


def _bleu_stats(
    hyp: Sequence[str], refs: Sequence[Sequence[str]], max_n: int
) -> tuple[list[int], list[int], int, int]:
    """Returns (correct, guess, testlen, reflen) for one image, as coco-caption cooks them."""
    _check_tokens(hyp, "hypothesis")
    if len(refs) == 0:
        raise ValueError("every image needs at least one reference")
    max_counts: Counter = Counter()
    for ref in refs:
        _check_tokens(ref, "reference")
        max_counts |= _ngrams(ref, max_n)  # element-wise max
    testlen = len(hyp)
    correct = [0] * max_n
    for ngram, count in _ngrams(hyp, max_n).items():
        correct[len(ngram) - 1] += min(count, max_counts[ngram])
    guess = [max(0, testlen - k) for k in range(max_n)]
    # Closest reference length; ties go to the shorter one.
    reflen = min((abs(len(r) - testlen), len(r)) for r in refs)[1]
    return correct, guess, testlen, reflen


def _bleu_from_stats(
    correct: Sequence[float], guess: Sequence[float], testlen: float, reflen: float
) -> list[float]:
    """BLEU-1..n (0-1 scale) with coco-caption's smoothing and brevity penalty."""
    bleus, prod = [], 1.0
    for k, (c, g) in enumerate(zip(correct, guess, strict=True)):
        prod *= (c + _TINY) / (g + _SMALL)
        bleus.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        bleus = [b * penalty for b in bleus]
    return bleus


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
) -> list[float]:
    """Corpus BLEU-1..max_n exactly as coco-caption's ``BleuScorer(option="closest")``.

    Unlike nltk, a hypothesis shorter than n adds 0 (not 1) to the n-gram denominator, and
    an order without matches gives a tiny positive score (1e-15 smoothing) instead of 0.

    Args:
        hypotheses: One token list per image.
        references: One list of reference token lists per image.
        max_n: Highest n-gram order.

    Returns:
        ``[BLEU-1, ..., BLEU-max_n]`` on the 0-100 scale.

    Raises:
        ValueError: On a length mismatch, an image without references or ``max_n < 1``.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    correct, guess = [0] * max_n, [0] * max_n
    testlen = reflen = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        c, g, t, r = _bleu_stats(hyp, refs, max_n)
        correct = [a + b for a, b in zip(correct, c, strict=True)]
        guess = [a + b for a, b in zip(guess, g, strict=True)]
        testlen += t
        reflen += r
    return [100.0 * b for b in _bleu_from_stats(correct, guess, testlen, reflen)]


def sentence_bleu(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4
) -> list[float]:
    """Per-image BLEU-1..max_n as in coco-caption's per-image score list.

    Args:
        hypothesis: Hypothesis tokens.
        references: Reference token lists for the same image.
        max_n: Highest n-gram order.

    Returns:
        ``[BLEU-1, ..., BLEU-max_n]`` on the 0-100 scale.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    stats = _bleu_stats(hypothesis, references, max_n)
    return [100.0 * b for b in _bleu_from_stats(*stats)]


ObjectKey = tuple[tuple[str, ...], str]


def object_key(obj: Mapping) -> ObjectKey:
    """Canonical key of a ground-truth object: (sorted unique attributes, name).

    Args:
        obj: Object dict with ``name`` and optional ``attributes``.
    """
    attrs = obj.get("attributes") or ()
    return tuple(sorted({str(a).lower() for a in attrs})), str(obj["name"]).lower()


def parse_objects(
    tokens: Sequence[str], names: Collection[str], attributes: Collection[str]
) -> Counter:
    """Parses the objects a caption mentions.

    Every token in ``names`` closes an object whose attributes are the ``attributes``
    tokens seen since the previous name token (or the start). Other tokens are ignored,
    as are attributes after the last name.

    Args:
        tokens: Caption tokens.
        names: Object-name vocabulary.
        attributes: Attribute vocabulary.

    Returns:
        A multiset (Counter) of keys in the form of :func:`object_key`.
    """
    found: Counter = Counter()
    pending: set[str] = set()
    for tok in tokens:
        if tok in names:
            found[(tuple(sorted(pending)), tok)] += 1
            pending = set()
        elif tok in attributes:
            pending.add(tok)
    return found


def objects_correct(
    hypotheses: Sequence[Sequence[str]], objects: Sequence[Sequence[Mapping]]
) -> list[bool]:
    """Whether each caption names exactly its image's objects (see :func:`object_accuracy`).

    Args:
        hypotheses: One token list per image.
        objects: One list of ground-truth object dicts per image.
    """
    if len(hypotheses) != len(objects):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(objects)} object lists")
    truths = [Counter(object_key(o) for o in objs) for objs in objects]
    names = {name for t in truths for _, name in t}
    attributes = {a for t in truths for attrs, _ in t for a in attrs}
    correct = []
    for hyp, truth in zip(hypotheses, truths, strict=True):
        _check_tokens(hyp, "hypothesis")
        correct.append(parse_objects(hyp, names, attributes) == truth)
    return correct


def object_accuracy(
    hypotheses: Sequence[Sequence[str]], objects: Sequence[Sequence[Mapping]]
) -> dict:
    """Share of captions whose parsed objects equal the ground-truth multiset exactly.

    Args:
        hypotheses: One token list per image.
        objects: One list of ground-truth object dicts per image.

    Returns:
        ``{"overall": pct, "by_count": {"1": pct, ...}, "count": n}``; ``by_count`` is keyed
        by the number of ground-truth objects in the image. Percentages are 0-100.
    """
    hits: dict[int, list[bool]] = {}
    for ok, objs in zip(objects_correct(hypotheses, objects), objects, strict=True):
        hits.setdefault(len(objs), []).append(ok)
    flat = [ok for oks in hits.values() for ok in oks]

    def pct(oks: list[bool]) -> float:
        return 100.0 * sum(oks) / len(oks) if oks else 0.0

    return {
        "overall": pct(flat),
        "by_count": {str(n): pct(hits[n]) for n in sorted(hits)},
        "count": len(flat),
    }


def _flatten(name: str, value: object, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            if key == "overall" and name:
                _flatten(name, sub, rows)
            elif key == "by_count" and name and isinstance(sub, Mapping):
                # Transparent level: by_count["2"] -> name[2].
                for n, v in sub.items():
                    _flatten(f"{name}[{n}]", v, rows)
            else:
                _flatten(f"{name}[{key}]" if name else str(key), sub, rows)
    elif value is None:
        rows.append((name, "-"))
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        rows.append((name, f"{value:.2f}"))
    else:
        rows.append((name, str(value)))


def format_table(metrics: Mapping) -> str:
    """Formats a (possibly nested) metric dict as a two-column plain-text table.

    Nested dicts are flattened as ``parent[key]``; an ``overall`` entry takes its parent's
    name and ``by_count`` entries appear as ``parent[n]``. Floats get two decimals, None
    (not computed) a dash.

    Args:
        metrics: Metric name -> value (number, string or nested dict).

    Returns:
        The table, one row per line, without a trailing newline.
    """
    rows: list[tuple[str, str]] = []
    _flatten("", metrics, rows)
    rows.insert(0, ("metric", "value"))
    w_name = max(len(n) for n, _ in rows)
    w_val = max(len(v) for _, v in rows)
    lines = [f"{n:<{w_name}}  {v:>{w_val}}" for n, v in rows]
    lines.insert(1, f"{'-' * w_name}  {'-' * w_val}")
    return "\n".join(lines)


def format_report(metrics: Mapping) -> str:
    """The metric table of :func:`format_table`, then one line per metric that was not
    computed (the ``not_computed`` entry: metric -> reason)."""
    reasons = metrics.get("not_computed") or {}
    table = format_table({k: v for k, v in metrics.items() if k != "not_computed"})
    return "\n".join([table, *(f"{name}: {reason}" for name, reason in reasons.items())])
