"""CIDEr-D computed in-process, as pycocoevalcap's `Cider` scorer computes it (no Java).

For every caption, n-grams of 1 to 4 words are weighted by tf-idf: the n-gram's count in
the caption times `log(N) - log(max(1, df))`, where `df` is the number of images whose
references contain the n-gram and `N` the number of images the frequencies come from. The
score of a candidate against one reference is, for each n, the cosine of their vectors with
the candidate's weights clipped at the reference's (the "-D": repeating a word does not
pay), times a Gaussian penalty `exp(-delta^2 / (2 sigma^2))`, sigma = 6, on the length
difference. The n-gram scores are averaged, then over the references, and multiplied by
10. As in pycocoevalcap, the "length" of a caption is its number of bigrams.

`CiderD` keeps the document frequencies of one reference corpus, so that a caption can be
scored alone (training rewards use the training references' frequencies); `cider_d`
scores a whole set against its own references, as the coco-caption evaluation does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

MAX_N = 4
SIGMA = 6.0

NGrams = Counter  # n-gram tuple -> count


def ngram_counts(words: Sequence[str], max_n: int = MAX_N) -> NGrams:
    """Counts of every n-gram of 1..max_n words."""
    return Counter(
        tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    )


class CiderD:
    """CIDEr-D with the document frequencies of a reference corpus.

    Args:
        references: for every image, its reference captions as token lists.
    """

    def __init__(self, references: Iterable[Sequence[Sequence[str]]]):
        self.document_frequency: Counter = Counter()
        images = 0
        for refs in references:
            images += 1
            self.document_frequency.update({g for ref in refs for g in ngram_counts(ref)})
        self.log_images = math.log(float(max(images, 1)))

    def _vector(self, counts: NGrams):
        """tf-idf weights per n, their norms, and the caption's length (its bigram count)."""
        vectors: list[dict] = [{} for _ in range(MAX_N)]
        norms = [0.0] * MAX_N
        length = 0
        for gram, count in counts.items():
            n = len(gram) - 1
            weight = count * (self.log_images - math.log(max(1.0, self.document_frequency[gram])))
            vectors[n][gram] = weight
            norms[n] += weight * weight
            if n == 1:
                length += count
        return vectors, [math.sqrt(x) for x in norms], length

    def score(self, candidate: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """CIDEr-D of one caption against its image's references (unscaled: x1, not x100)."""
        if not references:
            return 0.0
        vec, norm, length = self._vector(ngram_counts(candidate))
        total = 0.0
        for reference in references:
            ref_vec, ref_norm, ref_length = self._vector(ngram_counts(reference))
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
            per_n = 0.0
            for n in range(MAX_N):
                dot = sum(
                    min(weight, ref_vec[n].get(gram, 0.0)) * ref_vec[n].get(gram, 0.0)
                    for gram, weight in vec[n].items()
                )
                if norm[n] and ref_norm[n]:
                    dot /= norm[n] * ref_norm[n]
                per_n += dot * penalty
            total += per_n / MAX_N
        return 10.0 * total / len(references)


def cider_d(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D (frequencies from these references) and the per-image scores, x1."""
    scorer = CiderD(references)
    scores = [scorer.score(c, refs) for c, refs in zip(candidates, references, strict=True)]
    return (sum(scores) / len(scores) if scores else 0.0), scores
