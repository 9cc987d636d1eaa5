"""Captioner: the model's decoder driven by greedy and beam search."""

import numpy as np
import pytest
from keras import ops

from captioner.data.vocabulary import Vocabulary
from captioner.inference.captioner import Captioner
from tests.helpers import TINY_WORDS, tiny_model

WORDS = TINY_WORDS


@pytest.fixture(scope="module")
def model():
    return tiny_model(WORDS)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)


def reference_beam(model, vocab, image, beam_size, max_steps):
    """A plain per-image beam search with the same rules, one Python step at a time: <unk>
    is never said (the default) and <end> is never the first word."""
    annotations, _ = model.encode(image[None])
    state = [ops.convert_to_numpy(x) for x in model.decoder.initial_state(annotations)]
    live = [(0.0, [], state)]  # (score, tokens, state of one row)
    finished = []
    for step in range(max_steps):
        rows = [np.concatenate(parts) for parts in zip(*(s for _, _, s in live))]
        tokens = np.array([t[-1] if t else vocab.start_id for _, t, _ in live], np.int32)
        logits, new_state, _, _ = model.decoder.step(tokens, tuple(rows))
        log_probs = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
        log_probs[:, [vocab.pad_id, vocab.start_id, vocab.unk_id]] = -np.inf
        if step == 0:
            log_probs[:, vocab.end_id] = -np.inf
        new_state = [ops.convert_to_numpy(x) for x in new_state]
        candidates = sorted(
            (
                (-(score + log_probs[i, w]), i, w)
                for i, (score, _, _) in enumerate(live)
                for w in range(log_probs.shape[1])
            )
        )
        top = candidates[:beam_size]
        finished += [(-s, live[i][1] + [w]) for s, i, w in top if w == vocab.end_id]
        going_on = [c for c in candidates if c[2] != vocab.end_id][:beam_size]
        live = [(-s, live[i][1] + [w], [x[i : i + 1] for x in new_state]) for s, i, w in going_on]
    if finished:
        return max(finished, key=lambda f: f[0])
    score, tokens, _ = live[0]
    return score, tokens


@pytest.fixture(scope="module")
def beam3(model):
    # Traced once for the module; the weights are read when it runs.
    return Captioner(model, Vocabulary(WORDS), beam_size=3)


def test_beam_size_one_gives_the_greedy_captions(model, images):
    from captioner.inference.search import beam_search

    vocab = Vocabulary(WORDS)
    greedy_captioner = Captioner(model, vocab, beam_size=1)
    assert greedy_captioner.settings["decoding"] == "greedy"
    greedy = greedy_captioner.generate(images)
    annotations, _ = model.encode(images)
    beam = beam_search(
        model.decoder.step,
        model.decoder.initial_state(annotations),
        start_id=vocab.start_id,
        end_id=vocab.end_id,
        max_length=model.max_length + 1,
        beam_size=1,
        banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id),
    )
    np.testing.assert_array_equal(greedy["tokens"], ops.convert_to_numpy(beam["tokens"]))
    np.testing.assert_allclose(greedy["alphas"], ops.convert_to_numpy(beam["alphas"]), atol=1e-6)


def test_batched_beam_matches_a_per_image_search(model, images, beam3):
    vocab = Vocabulary(WORDS)
    captioner = beam3
    assert captioner.settings["decoding"] == "beam"
    out = captioner.generate(images)
    captions = captioner.caption(images)
    for b, image in enumerate(images):
        score, tokens = reference_beam(model, vocab, image, 3, captioner.max_length + 1)
        assert out["tokens"][b, : len(tokens)].tolist() == tokens
        np.testing.assert_allclose(out["scores"][b], score, rtol=1e-4, atol=1e-4)
        words = vocab.decode(tokens)
        assert captions[b].words == words
        assert captions[b].alphas.shape == (len(words), *model.grid_size)
        np.testing.assert_allclose(captions[b].alphas.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_beam_search_carries_the_coverage_state(images):
    # the top-down decoder with coverage: a longer state whose last entry changes every step
    model = tiny_model(WORDS, decoder="topdown", coverage=True)
    vocab = Vocabulary(WORDS)
    out = Captioner(model, vocab, beam_size=3).generate(images)
    for b, image in enumerate(images):
        score, tokens = reference_beam(model, vocab, image, 3, model.max_length + 1)
        assert out["tokens"][b, : len(tokens)].tolist() == tokens
        np.testing.assert_allclose(out["scores"][b], score, rtol=1e-4, atol=1e-4)


def test_unk_is_suppressed_by_default(model, images):
    vocab = Vocabulary(WORDS)
    bias = model.decoder.out.bias
    saved = ops.convert_to_numpy(bias)
    try:
        boosted = saved.copy()
        boosted[vocab.unk_id] += 50.0  # the model now wants <unk> everywhere
        boosted[vocab.end_id] -= 50.0  # and never ends, so the best live caption is returned
        bias.assign(boosted)
        free = Captioner(model, vocab, beam_size=3, suppress_unk=False).generate(images)
        assert (free["tokens"] == vocab.unk_id).all()
        kept_out = Captioner(model, vocab, beam_size=3).generate(images)
        assert not (kept_out["tokens"] == vocab.unk_id).any()
    finally:
        bias.assign(saved)


def test_bad_beam_size_is_refused(model):
    with pytest.raises(ValueError, match="beam size"):
        Captioner(model, Vocabulary(WORDS), beam_size=0)


def test_beam_search_from_cached_features_matches_images(model, images, beam3):
    features = ops.convert_to_numpy(model.grid_features(images))  # (B, L, D), as cached
    from_images = beam3.caption(images)
    from_features = beam3.caption_features(features)
    for expected, got in zip(from_images, from_features, strict=True):
        assert got.words == expected.words
        np.testing.assert_allclose(got.score, expected.score, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.alphas, expected.alphas, atol=1e-5)
        np.testing.assert_allclose(got.betas, expected.betas, atol=1e-5)
    # The cache stores float16; other batch sizes reuse the same trace.
    halves = beam3.caption_features(features[:2].astype(np.float16))
    assert [c.words for c in halves] == [c.words for c in from_images[:2]]
    assert beam3._generate_from_features.experimental_get_tracing_count() == 1


def test_evaluation_from_features_reports_the_beam_and_its_attention(model, images, beam3):
    from captioner.data.dataset import ImageRecord
    from captioner.evaluation.evaluate_split import evaluate_split, predict_records

    features = ops.convert_to_numpy(model.grid_features(images))
    # No image files: with cached features the encoder and the image reader are skipped.
    records = [ImageRecord(i, f"missing{i}.png", "test", [["a"]]) for i in range(len(images))]
    metrics = evaluate_split(beam3, records, split="test", coco_metrics=(), features=features)
    assert metrics["decoding"] == "beam" and metrics["beam_size"] == 3
    assert metrics["num_images"] == len(images) and metrics["num_unreadable_images"] == 0
    predicted = predict_records(beam3, records, batch_size=2, features=features)
    out = beam3.generate(images)  # the chosen hypotheses' maps, per generated word
    gh, gw = model.grid_size
    for b, caption in enumerate(predicted):
        n = len(caption.words)
        assert caption.words == beam3.vocab.decode(out["tokens"][b])
        np.testing.assert_allclose(
            caption.alphas, out["alphas"][b, :n].reshape(n, gh, gw), atol=1e-5
        )
