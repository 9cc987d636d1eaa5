"""BLEU parity with pycocoevalcap and the optional coco scorers (METEOR, ROUGE-L, CIDEr-D)."""

import importlib.util
import json
import shutil

import pytest

from captioner.data.text import tokenize
from captioner.evaluation import coco_metrics
from captioner.evaluation.coco_metrics import INSTALL_HINT, SPICE_REASON, coco_scores
from captioner.evaluation.metrics import corpus_bleu, sentence_bleu
from tests.helpers import FIXTURES

REFERENCE = json.loads((FIXTURES / "coco_bleu_reference.json").read_text("utf-8"))
IMAGES = REFERENCE["images"]
HAS_COCO = importlib.util.find_spec("pycocoevalcap") is not None
HAS_JAVA = shutil.which("java") is not None
needs_coco = pytest.mark.skipif(not HAS_COCO, reason="pycocoevalcap is not installed")
needs_java = pytest.mark.skipif(
    not (HAS_COCO and HAS_JAVA), reason="pycocoevalcap or Java is not installed"
)


def ours():
    hyps = [tokenize(im["hypothesis"]) for im in IMAGES]
    refs = [[tokenize(r) for r in im["references"]] for im in IMAGES]
    return hyps, refs


def test_fixture_covers_the_hard_cases():
    hyps, refs = ours()
    assert len(IMAGES) >= 50 and all(len(r) >= 3 for r in refs)
    assert any(len(h) == 0 for h in hyps)
    assert any(1 <= len(h) <= 3 for h in hyps)
    no_4gram = [
        i for i, s in enumerate(REFERENCE["per_image_bleu"]) if len(hyps[i]) >= 4 and s[3] < 1e-3
    ]
    assert len(no_4gram) >= 5


def test_tokens_equal_the_ptb_tokenizer_on_the_fixture():
    hyps, refs = ours()
    assert hyps == [im["ptb_hypothesis"] for im in IMAGES]
    assert refs == [im["ptb_references"] for im in IMAGES]


def test_bleu_equals_the_committed_pycocoevalcap_values():
    hyps, refs = ours()
    assert corpus_bleu(hyps, refs) == pytest.approx(
        [100 * b for b in REFERENCE["bleu"]], abs=1e-6, rel=0
    )
    for hyp, img_refs, expected in zip(hyps, refs, REFERENCE["per_image_bleu"], strict=True):
        assert sentence_bleu(hyp, img_refs) == pytest.approx(
            [100 * b for b in expected], abs=1e-6, rel=0
        )


@needs_java
def test_bleu_equals_pycocoevalcap_live():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ptb = PTBTokenizer()
    gts = ptb.tokenize(
        {i: [{"caption": r} for r in im["references"]] for i, im in enumerate(IMAGES)}
    )
    res = ptb.tokenize({i: [{"caption": im["hypothesis"]}] for i, im in enumerate(IMAGES)})
    corpus, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    hyps, refs = ours()
    assert corpus_bleu(hyps, refs) == pytest.approx([100 * b for b in corpus], abs=1e-6, rel=0)
    assert list(corpus) == pytest.approx(REFERENCE["bleu"], abs=1e-12)  # fixture is current
    for i, (hyp, img_refs) in enumerate(zip(hyps, refs, strict=True)):
        expected = [100 * scores[i] for scores in per_image]
        assert sentence_bleu(hyp, img_refs) == pytest.approx(expected, abs=1e-6, rel=0)


# ---------------------------------------------------------------- METEOR, ROUGE-L, CIDEr-D


def test_without_the_extra_metrics_are_not_computed_with_the_hint(monkeypatch):
    monkeypatch.setattr(coco_metrics.importlib.util, "find_spec", lambda name: None)
    result = coco_scores([["a", "dog"]], [[["a", "dog"]]], metrics=("cider", "meteor", "spice"))
    assert result.scores == {"cider": None, "meteor": None, "spice": None}
    assert result.unavailable["cider"] == result.unavailable["meteor"] == INSTALL_HINT
    assert "pip install 'captioner[coco]'" in INSTALL_HINT
    assert result.unavailable["spice"] == SPICE_REASON


def test_coco_scores_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown metrics"):
        coco_scores([["a"]], [[["a"]]], metrics=("bleurt",))
    with pytest.raises(ValueError, match="unknown tokenizer"):
        coco_scores([["a"]], [[["a"]]], tokenizer="nltk")
    with pytest.raises(ValueError, match="reference sets"):
        coco_scores([["a"]], [])
    with pytest.raises(ValueError, match="at least one reference"):
        coco_scores([["a"]], [[]])


@needs_coco
def test_cider_and_rouge_match_the_scorers_on_the_0_100_scale():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = ours()
    result = coco_scores(hyps, refs, metrics=("cider", "rouge_l"), tokenizer="captioner")
    assert result.tokenizer == "captioner" and not result.unavailable
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    for metric, scorer in (("cider", Cider()), ("rouge_l", Rouge())):
        corpus, each = scorer.compute_score(gts, res)
        assert result.scores[metric] == pytest.approx(100 * corpus, rel=1e-12)
        assert result.per_image[metric] == pytest.approx([100 * s for s in each], rel=1e-12)
    assert 0 < result.scores["rouge_l"] < 100 and result.scores["cider"] > 0
    # A perfect caption of every image scores ROUGE-L 100.
    perfect = coco_scores([r[0] for r in refs], refs, metrics=("rouge_l",), tokenizer="captioner")
    assert perfect.scores["rouge_l"] == pytest.approx(100.0)


@needs_coco
def test_a_failing_scorer_is_reported_and_the_others_still_run(monkeypatch):
    import pycocoevalcap.cider.cider as cider_module

    class Broken:
        def compute_score(self, gts, res):
            raise RuntimeError("boom")

    monkeypatch.setattr(cider_module, "Cider", Broken)
    result = coco_scores(
        [["a", "dog"]], [[["a", "dog"]]], metrics=("cider", "rouge_l"), tokenizer="captioner"
    )
    assert result.scores["cider"] is None and "boom" in result.unavailable["cider"]
    assert result.scores["rouge_l"] == pytest.approx(100.0)


@pytest.mark.slow
@needs_java
def test_meteor_and_the_ptb_tokenizer_run_offline():
    hyps, refs = ours()
    result = coco_scores(hyps[:12], refs[:12], metrics=("meteor", "rouge_l", "cider", "spice"))
    assert result.tokenizer == "ptb"
    assert set(result.unavailable) == {"spice"}
    assert 0 < result.scores["meteor"] < 100
    assert len(result.per_image["meteor"]) == 12
