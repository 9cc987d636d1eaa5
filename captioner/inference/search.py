"""Caption search, separate from the model: it only needs a step function.

A step function maps `(tokens (B,), state) -> (logits (B, V), state, alpha (B, L), beta (B,))`
where `state` is a tuple of tensors with the batch first. Both searches work on the whole
batch at once (beam search on batch x beam) with tensor operations only, so that they can be
compiled with `tf.function` around the step function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops

NEG_INF = -1e9
# Beam search's score of impossible hypotheses. Finite, because the TFLite converter turns
# -inf into the lowest float, which would then pass for a real score; real scores (sums of
# log-probabilities) stay far above half of it.
IMPOSSIBLE = -1e30


def _banned(banned_ids: Sequence[int], vocab_size):
    """(V,) bool: which words of the vocabulary are banned."""
    words = ops.arange(vocab_size)
    if not banned_ids:
        return words < 0
    return ops.any(words[:, None] == ops.array(list(banned_ids))[None, :], axis=1)


def _log_probs(logits, banned_ids: Sequence[int], banned_value: float = NEG_INF):
    """Log-softmax over the vocabulary, (N, V), with the banned words set to `banned_value`."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)  # (N, V)
    if banned_ids:
        banned = _banned(banned_ids, ops.shape(log_probs)[-1])
        log_probs = ops.where(banned[None, :], banned_value, log_probs)
    return log_probs


def searched_log_probs(logits, *, end_id: int, banned_ids: Sequence[int] = (0,), **_):
    """Teacher-forced logits (N, T, V) -> log-probabilities (N, T, V) of the distribution that
    the searches draw from: the banned words removed and `<end>` not first, renormalised.

    Takes a captioner's `search_options` (the ids it does not use are ignored).
    """
    _, length, vocab_size = ops.shape(logits)
    first = (ops.arange(length) == 0)[:, None]
    end_first = ops.logical_and(first, (ops.arange(vocab_size) == end_id)[None, :])
    masked = ops.logical_or(_banned(banned_ids, vocab_size)[None, :], end_first)  # (T, V)
    return ops.log_softmax(ops.where(masked[None], NEG_INF, ops.cast(logits, "float32")), axis=-1)


def _repeated_ngram_words(tokens, t, n: int, vocab_size):
    """(N, V) bool: the words that, written at position t after `tokens` (N, T) (positions
    0..t-1 filled), would repeat an n-gram the caption already has: the words that followed
    earlier occurrences of its last n - 1 words. All False while t < n."""
    length = tokens.shape[1]
    starts = ops.arange(length - n + 1)  # where an earlier n-gram may start
    matches = (starts <= t - n)[None, :]  # (1, T - n + 1): its last word is already written
    for m in range(n - 1):
        current = ops.take(tokens, ops.maximum(t - n + 1 + m, 0), axis=1)  # (N,)
        matches = ops.logical_and(matches, tokens[:, m : length - n + 1 + m] == current[:, None])
    followers = ops.one_hot(tokens[:, n - 1 :], vocab_size, dtype="bool")  # (N, T - n + 1, V)
    return ops.any(ops.logical_and(followers, matches[:, :, None]), axis=1)


def _block_repeats(log_probs, tokens, t, n: int, blocked_value: float):
    """log_probs (N, V) with the words that would repeat an n-gram of `tokens` (N, T) at
    position t set to `blocked_value`."""
    repeats = _repeated_ngram_words(tokens, t, n, ops.shape(log_probs)[-1])
    return ops.where(repeats, blocked_value, log_probs)


def _write_at(buffer, t, value):
    """buffer (B, K, T, ...) with position t along axis 2 replaced by value (B, K, ...)."""
    length = buffer.shape[2]
    at_t = ops.reshape(ops.arange(length) == t, (1, 1, length) + (1,) * (buffer.ndim - 3))
    return ops.where(at_t, ops.expand_dims(value, 2), buffer)


def greedy_search(
    step_fn: Callable,
    state: tuple,
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    banned_ids: Sequence[int] = (0,),
    pad_id: int = 0,
    seed=None,
    no_repeat_ngram: int = 0,
) -> dict:
    """Picks the most likely word at every step, for the whole batch at once.

    With `seed` (a `keras.random.SeedGenerator`), every word is instead drawn from the
    model's distribution (`sample_search`).

    `banned_ids` (by default `<pad>`) are never generated; `<start>` should be in it too.
    `<end>` cannot be the first word: a caption has at least one word. With
    `no_repeat_ngram` n > 0, no caption repeats a sequence of n words. After a caption's
    `<end>`, its remaining positions are `pad_id` and add nothing to its
    score. The steps run in a `while_loop` that stops when every caption has ended.

    Returns:
        tokens (B, max_length) int32, including `<end>` where reached; scores (B,) the sum of
        the chosen words' log-probabilities; alphas (B, max_length, L) and betas
        (B, max_length) of every generated word (zeros after `<end>`).
    """
    batch = ops.shape(state[0])[0]

    def advance(t, outputs, carry, banned=tuple(banned_ids)):
        logits, state, alpha, beta = outputs
        finished = carry["finished"]
        log_probs = _log_probs(logits, banned)
        if no_repeat_ngram:
            written = carry["outputs"][:, 0]  # (B, T): the words so far
            log_probs = _block_repeats(log_probs, written, t, no_repeat_ngram, NEG_INF)
        if seed is None:
            # top_k, not argmax: ties go to the lower id, as in beam search, and it converts
            # to TFLite (Keras' argmax does not).
            _, best = ops.top_k(log_probs, 1)
        else:
            best = keras.random.categorical(log_probs, 1, seed=seed)
        best = ops.cast(best[:, 0], "int32")  # (B,)
        word_log_prob = ops.max(log_probs, axis=-1) if seed is None else _chosen(log_probs, best)
        tokens = ops.where(finished, pad_id, best)
        going = ops.logical_not(finished)[:, None]
        # The buffers are (B, 1, T, ...) so that the beam search's writer applies.
        return {
            "state": state,
            "tokens": tokens,  # the next input; a finished row's words are ignored
            "finished": ops.logical_or(finished, ops.equal(tokens, end_id)),
            "score": carry["score"] + ops.where(finished, 0.0, word_log_prob),
            "outputs": _write_at(carry["outputs"], t, tokens[:, None]),
            "alphas": _write_at(carry["alphas"], t, ops.where(going, alpha, 0.0)[:, None]),
            "betas": _write_at(carry["betas"], t, ops.where(going[:, 0], beta, 0.0)[:, None]),
        }

    def call_step(carry):
        logits, state, alpha, beta = step_fn(carry["tokens"], carry["state"])
        return logits, state, ops.cast(alpha, "float32"), ops.cast(beta, "float32")

    carry = {
        "state": state,
        "tokens": ops.full((batch,), start_id, "int32"),
        "finished": ops.zeros((batch,), "bool"),
        "score": ops.zeros((batch,), "float32"),
        "outputs": ops.full((batch, 1, max_length), pad_id, "int32"),
    }
    outputs = call_step(carry)  # outside the loop: it tells the attention maps' size L
    maps = ops.zeros((batch, 1, max_length, ops.shape(outputs[2])[-1]))
    carry.update(alphas=maps, betas=maps[..., 0])
    carry = advance(0, outputs, carry, banned=(*banned_ids, end_id))  # no empty caption
    _, carry = ops.while_loop(
        lambda t, carry: ops.logical_and(
            t < max_length, ops.logical_not(ops.all(carry["finished"]))
        ),
        lambda t, carry: (t + 1, advance(t, call_step(carry), carry)),
        (ops.convert_to_tensor(1, "int32"), carry),
    )
    return {
        "tokens": carry["outputs"][:, 0],
        "scores": carry["score"],
        "alphas": carry["alphas"][:, 0],
        "betas": carry["betas"][:, 0],
    }


def _chosen(log_probs, tokens):
    """(N, V) log-probabilities, (N,) tokens -> (N,) the tokens' log-probabilities."""
    return ops.take_along_axis(log_probs, ops.cast(tokens, "int32")[:, None], axis=1)[:, 0]


def sample_search(step_fn: Callable, state: tuple, *, seed, **options) -> dict:
    """Draws every word from the model's distribution (`greedy_search`'s other rules hold:
    banned words, no `<end>` first, padding after `<end>`); scores are the drawn words'
    summed log-probabilities. `seed` is a `keras.random.SeedGenerator`."""
    return greedy_search(step_fn, state, seed=seed, **options)


def _gather_beams(x, indices):
    """Picks beams: x (B, K, ...) and indices (B, K') -> (B, K', ...)."""
    return ops.take_along_axis(x, ops.reshape(indices, ops.shape(indices) + (1,) * (x.ndim - 2)), 1)


def _tile_beams(x, beam_size: int):
    """(B, ...) -> (B * K, ...), every entry repeated K times in a row."""
    return ops.repeat(x, beam_size, axis=0)


def beam_search(
    step_fn: Callable,
    state: tuple,
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    beam_size: int = 3,
    banned_ids: Sequence[int] = (0,),
    pad_id: int = 0,
    length_penalty: float = 0.0,
    static_entries: Sequence[int] = (),
    no_repeat_ngram: int = 0,
) -> dict:
    """Beam search over the whole batch at once, with finished hypotheses kept aside.

    Hypotheses are scored by the sum of their words' log-probabilities (`<end>` included),
    divided by `length ** length_penalty` when ranking (length counts `<end>`; 0 gives the
    plain sum, 1 the mean log-probability). At every step, of the K x V extensions of the K
    live hypotheses, those ending with `<end>` that are among the K best finish and are kept
    aside (the best K finished ones are kept), and the K best others live on. The result is
    the best finished hypothesis, or the best live one where none finished within
    `max_length` steps. `<end>` cannot be the first word: a caption has at least one
    word. With `beam_size=1` and no length penalty it is exactly `greedy_search` (a length
    penalty reranks finished captions, which greedy decoding never does). Ties go to the
    lower beam and word index, so the result is deterministic.

    The steps run in a `while_loop` (the step function is traced twice, not `max_length`
    times); without length penalty it stops as soon as no live hypothesis can beat the best
    finished one of its batch entry, since scores only decrease.

    Args:
        step_fn: the step function (see the module docstring); it is called on B * K rows.
        state: the initial state for B rows.
        start_id: the first input token.
        end_id: the token that finishes a caption.
        max_length: the most steps (tokens generated, `<end>` included).
        beam_size: K.
        banned_ids: tokens never generated (`<pad>`, `<start>`, and `<unk>` to suppress it).
        pad_id: filler after `<end>`.
        length_penalty: the exponent of the length normalisation.
        static_entries: indices of state entries that the step function never changes (such
            as the image's annotations): they are tiled over the beams once and never
            reordered, which saves copying them at every step.
        no_repeat_ngram: n > 0: no hypothesis repeats a sequence of n words (the words that
            would are ruled out like banned ones); 0: no such rule.

    Returns:
        tokens (B, max_length) int32 with `<end>` where reached, then `pad_id`; scores (B,)
        the sum of log-probabilities; lengths (B,) tokens generated (`<end>` included);
        alphas (B, max_length, L) and betas (B, max_length) of every generated token (zeros
        after `<end>`).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if end_id in banned_ids:
        raise ValueError("the end token cannot be banned")
    if no_repeat_ngram < 0:
        raise ValueError(f"no_repeat_ngram must be 0 or more, got {no_repeat_ngram}")
    k = beam_size
    static = set(static_entries)
    batch = ops.shape(state[0])[0]
    flat_offsets = ops.arange(batch)[:, None] * k  # (B, 1): row of a beam's first entry

    def advance(t, outputs, carry, banned=tuple(banned_ids)):
        """Search bookkeeping after step t, given the step function's outputs."""
        logits, state, alpha, beta = outputs
        log_probs = _log_probs(logits, banned, IMPOSSIBLE)  # (B * K, V)
        vocab_size = ops.shape(log_probs)[-1]
        if no_repeat_ngram:
            alive_tokens = ops.reshape(carry["alive_tokens"], (batch * k, max_length))
            log_probs = _block_repeats(log_probs, alive_tokens, t, no_repeat_ngram, IMPOSSIBLE)
        log_probs = ops.reshape(log_probs, (batch, k, vocab_size))
        alive_alphas = _write_at(carry["alive_alphas"], t, ops.reshape(alpha, (batch, k, -1)))
        alive_betas = _write_at(carry["alive_betas"], t, ops.reshape(beta, (batch, k)))
        total = carry["alive_score"][:, :, None] + log_probs  # (B, K, V)

        # A beam finishes where its <end> is among the K best extensions of all live beams
        # (so that K = 1 is greedy); those join the finished ones kept so far.
        _, top = ops.top_k(ops.reshape(total, (batch, k * vocab_size)), k)  # (B, K)
        end_of_beam = ops.arange(k) * vocab_size + end_id  # (K,) indices into K * V
        end_in_top = ops.any(ops.equal(top[:, None, :], end_of_beam[None, :, None]), axis=-1)
        end_score = ops.where(end_in_top, total[:, :, end_id], IMPOSSIBLE)  # (B, K)
        length = ops.cast(t + 1, "float32")
        end_rank = end_score / ops.power(length, length_penalty)
        done_rank, keep = ops.top_k(ops.concatenate([carry["done_rank"], end_rank], 1), k)
        ended_tokens = _write_at(carry["alive_tokens"], t, ops.full((batch, k), end_id, "int32"))

        def merge(done, new):
            return _gather_beams(ops.concatenate([done, new], 1), keep)

        # The live beams go on with their K best extensions other than <end>.
        is_end = ops.arange(vocab_size) == end_id
        going_on = ops.where(is_end[None, None, :], IMPOSSIBLE, total)
        alive_score, best = ops.top_k(ops.reshape(going_on, (batch, k * vocab_size)), k)
        parent = ops.cast(best // vocab_size, "int32")  # (B, K)
        word = ops.cast(best, "int32") - parent * vocab_size
        rows = ops.reshape(parent + flat_offsets, (-1,))  # (B * K,)
        return {
            "tokens": ops.reshape(word, (-1,)),
            "state": tuple(
                x if i in static else ops.take(x, rows, axis=0) for i, x in enumerate(state)
            ),
            "alive_score": alive_score,
            "alive_tokens": _write_at(_gather_beams(carry["alive_tokens"], parent), t, word),
            "alive_alphas": _gather_beams(alive_alphas, parent),
            "alive_betas": _gather_beams(alive_betas, parent),
            "done_rank": done_rank,
            "done_score": merge(carry["done_score"], end_score),
            "done_length": merge(carry["done_length"], ops.full((batch, k), 1, "int32") * (t + 1)),
            "done_tokens": merge(carry["done_tokens"], ended_tokens),
            "done_alphas": merge(carry["done_alphas"], alive_alphas),
            "done_betas": merge(carry["done_betas"], alive_betas),
        }

    def call_step(carry):
        logits, state, alpha, beta = step_fn(carry["tokens"], carry["state"])
        alpha = ops.cast(alpha, "float32")
        return logits, state, alpha, ops.cast(beta, "float32")

    # Only the first beam is live at the start, so that the first step's K best words differ.
    first = ops.arange(k) == 0
    tokens = ops.full((batch, k, max_length), pad_id, "int32")
    carry = {
        "tokens": ops.full((batch * k,), start_id, "int32"),
        "state": tuple(_tile_beams(x, k) for x in state),  # every entry (B * K, ...)
        "alive_score": ops.broadcast_to(ops.where(first, 0.0, IMPOSSIBLE)[None], (batch, k)),
        "alive_tokens": tokens,
        "done_rank": ops.full((batch, k), IMPOSSIBLE),
        "done_score": ops.full((batch, k), IMPOSSIBLE),
        "done_length": ops.zeros((batch, k), "int32"),
        "done_tokens": tokens,
    }
    # The first step runs outside the loop: it tells the attention maps' size L.
    outputs = call_step(carry)
    maps = ops.zeros((batch, k, max_length, ops.shape(outputs[2])[-1]))
    carry.update(alive_alphas=maps, done_alphas=maps)
    carry.update(alive_betas=maps[..., 0], done_betas=maps[..., 0])
    carry = advance(0, outputs, carry, banned=(*banned_ids, end_id))  # no empty caption

    def more_to_do(t, carry):
        if length_penalty != 0:
            return t < max_length
        # Live scores only decrease: stop once none beats its entry's best finished one.
        hopeless = ops.max(carry["alive_score"], axis=1) <= carry["done_rank"][:, 0]
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(hopeless)))

    _, carry = ops.while_loop(
        more_to_do,
        lambda t, carry: (t + 1, advance(t, call_step(carry), carry)),
        (ops.convert_to_tensor(1, "int32"), carry),
    )

    # The best finished hypothesis (the pool is sorted), else the best live one.
    any_done = carry["done_score"][:, 0] > IMPOSSIBLE / 2  # (B,)
    alive_rank = carry["alive_score"] / float(max_length) ** length_penalty
    _, best_alive = ops.top_k(alive_rank, 1)  # (B, 1)

    def pick(done, alive):
        alive = _gather_beams(alive, best_alive)[:, 0]
        mask = ops.reshape(any_done, (-1,) + (1,) * (alive.ndim - 1))
        return ops.where(mask, done[:, 0], alive)

    return {
        "tokens": pick(carry["done_tokens"], carry["alive_tokens"]),
        "scores": pick(carry["done_score"], carry["alive_score"]),
        "lengths": pick(carry["done_length"], ops.full((batch, k), max_length, "int32")),
        "alphas": pick(carry["done_alphas"], carry["alive_alphas"]),
        "betas": pick(carry["done_betas"], carry["alive_betas"]),
    }
