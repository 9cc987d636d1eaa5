"""METEOR, ROUGE-L and CIDEr-D through the optional `pycocoevalcap` scorers, one by one.

`pycocoevalcap` (the ``coco`` extra, ``pip install 'captioner[coco]'``) runs offline when its
scorers are called one by one; METEOR and its PTB tokenizer start Java. Its
``COCOEvalCap.evaluate()`` and its SPICE scorer download Stanford CoreNLP models on first
use, so SPICE is never run here and is reported as unavailable with that reason.

Nothing here raises because a scorer is missing or fails: every metric that could not be
computed is ``None`` in the scores and named with the reason in ``unavailable``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import shutil
from collections.abc import Sequence

INSTALL_HINT = "not computed: install the coco extra, pip install 'captioner[coco]' (needs Java)"
SPICE_REASON = (
    "not computed: SPICE downloads Stanford CoreNLP models on first use, which cannot be "
    "done offline"
)
# Our metric name -> (pycocoevalcap module, class, needs Java).
SCORERS = {
    "meteor": ("pycocoevalcap.meteor.meteor", "Meteor", True),
    "rouge_l": ("pycocoevalcap.rouge.rouge", "Rouge", False),
    "cider": ("pycocoevalcap.cider.cider", "Cider", False),
}
COCO_METRICS = tuple(SCORERS)
TOKENIZERS = ("ptb", "captioner")


@dataclasses.dataclass
class CocoScores:
    """Results of :func:`coco_scores`.

    Attributes:
        scores: Metric -> corpus score on the 0-100 scale, or None when not computed.
        per_image: Metric -> per-image scores (0-100) for every computed metric.
        unavailable: Metric -> why it was not computed.
        tokenizer: The tokenisation the scorers saw.
    """

    scores: dict[str, float | None]
    per_image: dict[str, list[float]]
    unavailable: dict[str, str]
    tokenizer: str


def coco_missing_reason(java: bool = False) -> str | None:
    """Why the coco scorers cannot run here (None when they can).

    Args:
        java: Also require a ``java`` executable on the PATH.
    """
    if importlib.util.find_spec("pycocoevalcap") is None:
        return INSTALL_HINT
    if java and shutil.which("java") is None:
        return "not computed: pycocoevalcap needs Java, and no java executable is on the PATH"
    return None


def _ptb_tokenize(texts: dict[int, list[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize(
        {key: [{"caption": t} for t in values] for key, values in texts.items()}
    )
    if {k: len(v) for k, v in tokenized.items()} != {k: len(v) for k, v in texts.items()}:
        raise RuntimeError("the PTB tokenizer returned a different number of captions")
    return tokenized


def _prepare(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    tokenizer: str,
) -> tuple[dict[int, list[str]], dict[int, list[str]], str, str | None]:
    """Scorer inputs ``(gts, res)`` keyed by image position, the tokenizer used and why
    the PTB tokenizer was not (None when it was)."""
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    if tokenizer == "captioner":
        return gts, res, "captioner", None
    reason = coco_missing_reason(java=True)
    if reason is None:
        try:
            return _ptb_tokenize(gts), _ptb_tokenize(res), "ptb", None
        except Exception as error:  # a Java or file-system failure: fall back, never crash
            reason = f"the PTB tokenizer failed ({type(error).__name__}: {error})"
    return gts, res, "captioner", reason


def coco_scores(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    metrics: Sequence[str] = COCO_METRICS,
    tokenizer: str = "ptb",
) -> CocoScores:
    """Scores captions with pycocoevalcap's METEOR, ROUGE-L and CIDEr-D scorers.

    Args:
        hypotheses: One token list per image (free-running output, without `<end>`).
        references: One list of reference token lists per image.
        metrics: Which of ``"meteor"``, ``"rouge_l"``, ``"cider"`` to compute; ``"spice"``
            may be asked for and is reported unavailable.
        tokenizer: ``"ptb"`` re-tokenises the space-joined tokens with pycocoevalcap's
            PTBTokenizer (Java; falls back to our tokens if it cannot run), ``"captioner"``
            gives the scorers our PTB-style tokens as they are.

    Returns:
        A :class:`CocoScores`; CIDEr here is pycocoevalcap's ``Cider``, i.e. CIDEr-D
        (sigma 6, clipped counts, x10), with document frequencies from these references.

    Raises:
        ValueError: On an unknown metric or tokenizer, or mismatched inputs.
    """
    unknown = sorted(set(metrics) - set(SCORERS) - {"spice"})
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {[*SCORERS, 'spice']}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose from {TOKENIZERS}")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every image needs at least one reference")
    scores: dict[str, float | None] = {m: None for m in metrics}
    per_image: dict[str, list[float]] = {}
    unavailable: dict[str, str] = {}
    if "spice" in metrics:
        unavailable["spice"] = SPICE_REASON
    wanted = [m for m in metrics if m in SCORERS]
    missing = coco_missing_reason()
    if not wanted or missing is not None or not hypotheses:
        reason = missing or "not computed: no images"
        unavailable.update({m: reason for m in wanted})
        return CocoScores(scores, per_image, unavailable, "captioner")

    gts, res, used, ptb_reason = _prepare(hypotheses, references, tokenizer)
    if ptb_reason is not None and tokenizer == "ptb":
        used = f"captioner (PTB tokenizer unavailable: {ptb_reason})"
    for metric in wanted:
        module_name, class_name, needs_java = SCORERS[metric]
        if needs_java and shutil.which("java") is None:
            unavailable[metric] = coco_missing_reason(java=True) or "no java"
            continue
        try:
            module = importlib.import_module(module_name)
            scorer = getattr(module, class_name)()
            corpus, each = scorer.compute_score(gts, res)
            del scorer  # METEOR: stops its Java process now
        except Exception as error:  # a scorer crash must not lose the other metrics
            unavailable[metric] = (
                f"not computed: {class_name} failed ({type(error).__name__}: {error})"
            )
            continue
        scores[metric] = 100.0 * float(corpus)
        per_image[metric] = [100.0 * float(s) for s in each]
    return CocoScores(scores, per_image, unavailable, used)
