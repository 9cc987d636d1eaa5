import numpy as np
import pytest
from keras import ops

from captioner.inference.search import beam_search, greedy_search

VOCAB = 6  # 0 pad, 1 start, 2 end, 3.. words
START, END = 1, 2


def scripted_step(script):
    """A fake step function that plays back fixed logits: script[t] is (B, V)."""

    def step(tokens, state):
        (t,) = state
        index = int(ops.convert_to_numpy(t)[0])
        logits = ops.convert_to_tensor(script[index], "float32")
        alpha = ops.full((logits.shape[0], 4), 0.25)
        return logits, (t + 1,), alpha, ops.ones((logits.shape[0],))

    return step


def logits_for(*preferred):
    rows = np.full((len(preferred), VOCAB), -5.0, np.float32)
    for row, token in enumerate(preferred):
        rows[row, token] = 5.0
    return rows


def test_greedy_follows_the_best_word_and_pads_after_end():
    script = [logits_for(3, 4), logits_for(END, 5), logits_for(4, END), logits_for(3, 3)]
    out = greedy_search(
        scripted_step(script), (np.zeros(2, np.int32),), start_id=START, end_id=END, max_length=4
    )
    tokens = ops.convert_to_numpy(out["tokens"])
    assert tokens.tolist() == [[3, END, 0, 0], [4, 5, END, 0]]
    assert ops.convert_to_numpy(out["alphas"]).shape == (2, 4, 4)
    # the score sums log-probabilities of the chosen words up to <end>
    log_p = float(ops.convert_to_numpy(ops.log_softmax(ops.array(logits_for(3)), axis=-1))[0, 3])
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["scores"]), [2 * log_p, 3 * log_p], atol=1e-6
    )


def test_banned_words_are_never_generated():
    script = [logits_for(0), logits_for(START), logits_for(END)]
    script[0][0, 4] = 4.0  # second best after the banned <pad>
    script[1][0, 5] = 4.0  # second best after the banned <start>
    out = greedy_search(
        scripted_step(script),
        (np.zeros(1, np.int32),),
        start_id=START,
        end_id=END,
        max_length=3,
        banned_ids=(0, START),
    )
    tokens = ops.convert_to_numpy(out["tokens"])[0].tolist()
    assert tokens == [4, 5, END]


def test_end_is_never_the_first_word():
    # The model prefers <end> at once; the caption gets its best other word first.
    script = [logits_for(END, END), logits_for(END, 5)]
    script[0][0, 4] = 4.0
    script[0][1, 3] = 1.0
    out = greedy_search(
        scripted_step(script), (np.zeros(2, np.int32),), start_id=START, end_id=END, max_length=2
    )
    assert ops.convert_to_numpy(out["tokens"]).tolist() == [[4, END], [3, 5]]


# Beam search. The fake step function is a second-order Markov chain with one table of
# logits per batch entry: logits = tables[image, previous word, input word]. Its state
# (image, previous word) must be tiled and reordered with the beams, and its attention is
# the one-hot of the input word, so that the returned maps can be checked against the words.
PAD, UNK, W1, W2 = 0, 3, 4, 5
MARKOV_VOCAB = 6
BANNED = (PAD, START)


def markov_step(tables):
    """tables: (B, V, V, V) logits."""
    batch, vocab = tables.shape[0], tables.shape[-1]
    flat = ops.convert_to_tensor(tables.reshape(-1, vocab), "float32")

    def step(tokens, state):
        image, previous = state
        logits = ops.take(flat, (image * vocab + previous) * vocab + tokens, axis=0)
        alpha = ops.one_hot(tokens, vocab)
        beta = ops.cast(tokens, "float32") / 10.0
        return logits, (image, tokens), alpha, beta

    initial = (np.arange(batch, dtype=np.int32), np.full(batch, START, np.int32))
    return step, initial


def markov_log_probs(tables, banned=BANNED):
    shifted = tables - tables.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    log_probs[..., list(banned)] = -np.inf
    return log_probs


def repeats_an_ngram(sequence, n):
    """Whether the words of `sequence` before its <end> hold some sequence of n words twice."""
    words = list(sequence)[: list(sequence).index(END)] if END in sequence else list(sequence)
    ngrams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(ngrams)) < len(ngrams)


def exhaustive_best(
    log_probs, max_length, length_penalty=0.0, words=(UNK, W1, W2), no_repeat_ngram=0
):
    """The best caption of one table by enumeration: (tokens, score), <end> included; with
    `no_repeat_ngram` n, among the captions that repeat no sequence of n words."""
    import itertools

    best, best_rank = None, -np.inf
    finished = []
    for n in range(1, max_length):  # a caption has at least one word
        for prefix in itertools.product(words, repeat=n):
            finished.append((*prefix, END))
    candidates = finished
    if all(np.isneginf(log_probs[..., END]).ravel()):  # nothing can finish
        candidates = list(itertools.product(words, repeat=max_length))
    for sequence in candidates:
        if no_repeat_ngram and repeats_an_ngram(sequence, no_repeat_ngram):
            continue
        score, previous, token = 0.0, START, START
        for word in sequence:
            score += log_probs[previous, token, word]
            previous, token = token, word
        rank = score / len(sequence) ** length_penalty
        if rank > best_rank:
            best, best_rank, best_score = sequence, rank, score
    return list(best), best_score


def run_beam(tables, max_length, **options):
    step, initial = markov_step(tables)
    options.setdefault("banned_ids", BANNED)
    out = beam_search(step, initial, start_id=START, end_id=END, max_length=max_length, **options)
    return {key: ops.convert_to_numpy(value) for key, value in out.items()}


def random_tables(seed, batch=3, scale=2.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, *(MARKOV_VOCAB,) * 3)) * scale).astype(np.float32)


def check_attention_follows_words(out):
    """alpha of step t is the one-hot of the word fed at t (<start>, then the caption)."""
    for tokens, length, alphas, betas in zip(
        out["tokens"], out["lengths"], out["alphas"], out["betas"]
    ):
        inputs = [START, *tokens[: length - 1]]
        np.testing.assert_array_equal(alphas[:length].argmax(-1), inputs)
        np.testing.assert_allclose(betas[:length], np.array(inputs) / 10.0, rtol=1e-6)
        assert not alphas[length:].any() and not betas[length:].any()


@pytest.mark.parametrize("seed", range(4))
def test_beam_size_one_is_exactly_greedy(seed):
    tables = random_tables(seed, batch=5, scale=1.0)
    step, initial = markov_step(tables)
    greedy = greedy_search(
        step, initial, start_id=START, end_id=END, max_length=7, banned_ids=BANNED
    )
    beam = run_beam(tables, 7, beam_size=1)
    np.testing.assert_array_equal(beam["tokens"], ops.convert_to_numpy(greedy["tokens"]))
    np.testing.assert_allclose(beam["scores"], ops.convert_to_numpy(greedy["scores"]), atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_a_wide_enough_beam_finds_the_exhaustive_best(seed, length_penalty):
    # 3 words and 4 steps: at most 27 live prefixes with 4 extensions each, so 108 beams keep
    # every prefix and let every <end> finish.
    tables = random_tables(seed)
    out = run_beam(tables, 4, beam_size=108, length_penalty=length_penalty)
    for b in range(len(tables)):
        tokens, score = exhaustive_best(markov_log_probs(tables[b]), 4, length_penalty)
        assert out["tokens"][b, : len(tokens)].tolist() == tokens
        assert (out["tokens"][b, len(tokens) :] == PAD).all()
        assert out["lengths"][b] == len(tokens)
        np.testing.assert_allclose(out["scores"][b], score, rtol=1e-5)
    check_attention_follows_words(out)


@pytest.mark.parametrize("no_repeat_ngram", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_no_repeated_ngram_the_wide_beam_finds_the_exhaustive_best(seed, no_repeat_ngram):
    # Tables that favour repeating W1: without the rule most best captions repeat a bigram.
    tables = random_tables(seed, scale=1.0)
    tables[..., W1] += 2.0
    plain = run_beam(tables, 5, beam_size=400, length_penalty=1.0)
    assert any(repeats_an_ngram(tokens.tolist(), 2) for tokens in plain["tokens"])
    out = run_beam(tables, 5, beam_size=400, length_penalty=1.0, no_repeat_ngram=no_repeat_ngram)
    for b in range(len(tables)):
        log_probs = markov_log_probs(tables[b])
        tokens, score = exhaustive_best(log_probs, 5, 1.0, no_repeat_ngram=no_repeat_ngram)
        assert out["tokens"][b, : len(tokens)].tolist() == tokens
        np.testing.assert_allclose(out["scores"][b], score, rtol=1e-5)
    check_attention_follows_words(out)


@pytest.mark.parametrize("seed", range(3))
def test_no_repeated_ngram_greedy_is_beam_one(seed):
    tables = random_tables(seed, batch=5, scale=1.0)
    tables[..., W1] += 2.0
    step, initial = markov_step(tables)
    options = dict(start_id=START, end_id=END, max_length=8, banned_ids=BANNED)
    greedy = greedy_search(step, initial, no_repeat_ngram=2, **options)
    tokens = ops.convert_to_numpy(greedy["tokens"])
    assert not any(repeats_an_ngram(row.tolist(), 2) for row in tokens)
    plain = ops.convert_to_numpy(greedy_search(step, initial, **options)["tokens"])
    assert any(repeats_an_ngram(row.tolist(), 2) for row in plain)
    beam = run_beam(tables, 8, beam_size=1, no_repeat_ngram=2)
    np.testing.assert_array_equal(beam["tokens"], tokens)
    np.testing.assert_allclose(beam["scores"], ops.convert_to_numpy(greedy["scores"]), atol=1e-5)


def first_order_tables(rows):
    """(1, V, V, V) tables where the logits depend on the input word only: rows[word] = probs."""
    tables = np.full((1, *(MARKOV_VOCAB,) * 3), -30.0, np.float32)
    for word, probs in rows.items():
        for token, p in probs.items():
            tables[0, :, word, token] = np.log(p)
    return tables


def test_beam_finds_what_greedy_misses():
    # Greedy takes W1 (0.6) and then a weak word; W2 (0.4) then <end> (0.99) is better.
    tables = first_order_tables(
        {
            START: {W1: 0.6, W2: 0.4},
            W1: {W1: 0.35, W2: 0.33, END: 0.32},
            W2: {END: 0.99, W1: 0.01},
        }
    )
    assert run_beam(tables, 3, beam_size=1)["tokens"][0].tolist()[:2] == [W1, W1]
    out = run_beam(tables, 3, beam_size=2)
    assert out["tokens"][0].tolist() == [W2, END, PAD]
    np.testing.assert_allclose(out["scores"][0], np.log(0.4) + np.log(0.99), rtol=1e-4)


def test_the_best_unfinished_caption_is_returned_when_none_ends():
    tables = random_tables(7)
    tables[..., END] = -np.inf  # <end> can never be generated
    out = run_beam(tables, 4, beam_size=27)
    assert (out["lengths"] == 4).all()
    for b in range(len(tables)):
        tokens, score = exhaustive_best(markov_log_probs(tables[b]), 4)
        assert out["tokens"][b].tolist() == tokens and END not in tokens
        np.testing.assert_allclose(out["scores"][b], score, rtol=1e-5)
    check_attention_follows_words(out)


def test_length_normalisation_prefers_the_better_mean():
    # After the sure first word W2: "<end>": log 0.5 = -0.69, -0.35 per token. "W1 <end>":
    # log 0.45 + log 0.9 = -0.90 in all, but -0.30 per token.
    tables = first_order_tables(
        {START: {W2: 1.0}, W2: {END: 0.5, W1: 0.45, UNK: 0.05}, W1: {END: 0.9, UNK: 0.1}}
    )
    assert run_beam(tables, 4, beam_size=2)["tokens"][0].tolist() == [W2, END, PAD, PAD]
    out = run_beam(tables, 4, beam_size=2, length_penalty=1.0)
    assert out["tokens"][0].tolist() == [W2, W1, END, PAD]
    np.testing.assert_allclose(out["scores"][0], np.log(0.45) + np.log(0.9), rtol=1e-3)


def test_unk_is_suppressed_when_banned():
    tables = first_order_tables(
        {START: {UNK: 0.7, W1: 0.3}, UNK: {END: 1.0}, W1: {W2: 0.6, END: 0.4}, W2: {END: 1.0}}
    )
    assert run_beam(tables, 4, beam_size=3)["tokens"][0].tolist()[:2] == [UNK, END]
    out = run_beam(tables, 4, beam_size=3, banned_ids=(*BANNED, UNK))
    assert out["tokens"][0].tolist()[:3] == [W1, W2, END]
    assert UNK not in out["tokens"]


def test_beam_search_is_deterministic_batch_independent_and_compiles():
    import tensorflow as tf

    tables = random_tables(11, batch=4)
    first = run_beam(tables, 4, beam_size=3)
    again = run_beam(tables, 4, beam_size=3)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    for b in range(len(tables)):  # the same caption alone as in the batch
        alone = run_beam(tables[b : b + 1], 4, beam_size=3)
        np.testing.assert_array_equal(alone["tokens"][0], first["tokens"][b])
    step, initial = markov_step(tables)
    compiled = tf.function(
        lambda image, previous: beam_search(
            step,
            (image, previous),
            start_id=START,
            end_id=END,
            max_length=4,
            beam_size=3,
            banned_ids=BANNED,
            static_entries=(0,),  # the image index never changes
        )
    )
    out = compiled(*initial)
    np.testing.assert_array_equal(out["tokens"].numpy(), first["tokens"])
    np.testing.assert_allclose(out["alphas"].numpy(), first["alphas"])


def test_beam_search_rejects_bad_settings():
    step, initial = markov_step(random_tables(0))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(step, initial, start_id=START, end_id=END, max_length=3, beam_size=0)
    with pytest.raises(ValueError, match="end token"):
        beam_search(step, initial, start_id=START, end_id=END, max_length=3, banned_ids=(END,))
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        beam_search(step, initial, start_id=START, end_id=END, max_length=3, no_repeat_ngram=-1)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_beam_search_never_returns_an_empty_caption(beam_size):
    tables = random_tables(5)
    tables[:, START, START, END] = 50.0  # <end> first would win by far
    out = run_beam(tables, 4, beam_size=beam_size)
    assert (out["tokens"][:, 0] != END).all() and (out["lengths"] >= 2).all()


def test_sampling_follows_the_distribution_and_the_rules():
    import keras

    from captioner.inference.search import sample_search

    # First word: W1 with probability ~0.73, W2 ~0.27 (<end> first is never allowed);
    # then <end> for sure.
    tables = first_order_tables(
        {START: {W1: 0.55, W2: 0.2, END: 0.25}, W1: {END: 1.0}, W2: {END: 1.0}}
    )
    tables = np.repeat(tables, 400, axis=0)
    step, initial = markov_step(tables)
    out = sample_search(
        step, initial, seed=keras.random.SeedGenerator(0), start_id=START, end_id=END,
        max_length=3, banned_ids=BANNED,
    )  # fmt: skip
    tokens = ops.convert_to_numpy(out["tokens"])
    assert set(tokens[:, 0]) == {W1, W2} and (tokens[:, 1] == END).all()
    assert 0.65 < (tokens[:, 0] == W1).mean() < 0.81
    scores = ops.convert_to_numpy(out["scores"])
    # the model's log-probability of the drawn words (not renormalised over the allowed ones)
    np.testing.assert_allclose(scores[tokens[:, 0] == W1], np.log(0.55), atol=1e-3)
    again = sample_search(
        step, initial, seed=keras.random.SeedGenerator(0), start_id=START, end_id=END,
        max_length=3, banned_ids=BANNED,
    )  # fmt: skip
    np.testing.assert_array_equal(ops.convert_to_numpy(again["tokens"]), tokens)
