"""Caption search, separate from the model: it only needs a step function.

A step function maps `(tokens (B,), state) -> (logits (B, V), state, alpha (B, L), beta (B,))`
where `state` is a tuple of tensors with the batch first. Both searches work on the whole
batch at once (beam search on batch x beam) with tensor operations only, so that they can be
compiled with `tf.function` around the step function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from keras import ops

NEG_INF = -1e9


def _log_probs(logits, banned_ids: Sequence[int], banned_value: float = NEG_INF):
    """Log-softmax over the vocabulary, (N, V), with the banned words set to `banned_value`."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)  # (N, V)
    if banned_ids:
        vocab_size = ops.shape(log_probs)[-1]
        banned = ops.sum(ops.one_hot(ops.array(list(banned_ids)), vocab_size), axis=0) > 0
        log_probs = ops.where(banned[None, :], banned_value, log_probs)
    return log_probs


def greedy_search(
    step_fn: Callable,
    state: tuple,
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    banned_ids: Sequence[int] = (0,),
    pad_id: int = 0,
) -> dict:
    """Picks the most likely word at every step, for the whole batch at once.

    `banned_ids` (by default `<pad>`) are never generated; `<start>` should be in it too.
    After a caption's `<end>`, its remaining positions are `pad_id` and add nothing to its
    score.

    Returns:
        tokens (B, max_length) int32, including `<end>` where reached; scores (B,) the sum of
        the chosen words' log-probabilities; alphas (B, max_length, L); betas (B, max_length).
    """
    batch = ops.shape(state[0])[0]
    tokens = ops.full((batch,), start_id, "int32")
    finished = ops.zeros((batch,), "bool")
    score = ops.zeros((batch,), "float32")
    outputs, alphas, betas = [], [], []
    for _ in range(max_length):
        logits, state, alpha, beta = step_fn(tokens, state)
        log_probs = _log_probs(logits, banned_ids)
        best = ops.cast(ops.argmax(log_probs, axis=-1), "int32")  # (B,)
        best_log_prob = ops.max(log_probs, axis=-1)
        score = score + ops.where(finished, 0.0, best_log_prob)
        tokens = ops.where(finished, pad_id, best)
        finished = ops.logical_or(finished, ops.equal(tokens, end_id))
        outputs.append(tokens)
        alphas.append(alpha)
        betas.append(beta)
    return {
        "tokens": ops.stack(outputs, axis=1),
        "scores": score,
        "alphas": ops.stack(alphas, axis=1),
        "betas": ops.stack(betas, axis=1),
    }


def _gather_beams(x, indices):
    """Picks beams: x (B, K, ...) and indices (B, K') -> (B, K', ...)."""
    return ops.take_along_axis(x, ops.reshape(indices, ops.shape(indices) + (1,) * (x.ndim - 2)), 1)


def _tile_beams(x, beam_size: int):
    """(B, ...) -> (B * K, ...), every entry repeated K times in a row."""
    return ops.repeat(x, beam_size, axis=0)


def _write_at(buffer, t: int, value):
    """buffer (B, K, T, ...) with position t along axis 2 replaced by value (B, K, ...)."""
    length = buffer.shape[2]
    at_t = ops.reshape(ops.arange(length) == t, (1, 1, length) + (1,) * (buffer.ndim - 3))
    return ops.where(at_t, ops.expand_dims(value, 2), buffer)


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
) -> dict:
    """Beam search over the whole batch at once, with finished hypotheses kept aside.

    Hypotheses are scored by the sum of their words' log-probabilities (`<end>` included),
    divided by `length ** length_penalty` when ranking (length counts `<end>`; 0 gives the
    plain sum, 1 the mean log-probability). At every step, of the K x V extensions of the K
    live hypotheses, those ending with `<end>` that are among the K best finish and are kept
    aside (the best K finished ones are kept), and the K best others live on. The result is
    the best finished hypothesis, or the best live one where none finished within
    `max_length` steps. With `beam_size=1` and no length penalty it is exactly
    `greedy_search`. Ties go to the lower beam and word index, so the result is deterministic.

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
    k = beam_size
    static = set(static_entries)
    batch = ops.shape(state[0])[0]
    state = tuple(_tile_beams(x, k) for x in state)  # every entry (B * K, ...)
    tokens = ops.full((batch * k,), start_id, "int32")
    # Only the first beam is live at the start, so that the first step's K best words differ.
    first = ops.arange(k) == 0
    alive_score = ops.broadcast_to(ops.where(first, 0.0, -math.inf)[None], (batch, k))
    alive_tokens = ops.full((batch, k, max_length), pad_id, "int32")
    alive_alphas = alive_betas = None  # created at the first step, when L is known
    done_rank = ops.full((batch, k), -math.inf)  # finished hypotheses, ranking score
    done_score = ops.full((batch, k), -math.inf)
    done_length = ops.zeros((batch, k), "int32")
    done_tokens = alive_tokens
    flat_offsets = ops.arange(batch)[:, None] * k  # (B, 1), row of a beam in (B * K)

    for t in range(max_length):
        logits, state, alpha, beta = step_fn(tokens, state)
        log_probs = _log_probs(logits, banned_ids, -math.inf)  # (B * K, V)
        vocab_size = ops.shape(log_probs)[-1]
        log_probs = ops.reshape(log_probs, (batch, k, vocab_size))
        alpha = ops.reshape(ops.cast(alpha, "float32"), (batch, k, -1))  # (B, K, L)
        beta = ops.reshape(ops.cast(beta, "float32"), (batch, k))
        if alive_alphas is None:
            alive_alphas = ops.zeros((batch, k, max_length, ops.shape(alpha)[-1]))
            alive_betas = ops.zeros((batch, k, max_length))
            done_alphas, done_betas = alive_alphas, alive_betas
        alive_alphas = _write_at(alive_alphas, t, alpha)
        alive_betas = _write_at(alive_betas, t, beta)
        total = alive_score[:, :, None] + log_probs  # (B, K, V)

        # A beam finishes where its <end> is among the K best extensions of all live beams
        # (so that K = 1 is greedy); those join the finished ones kept so far.
        flat_total = ops.reshape(total, (batch, k * vocab_size))
        _, top = ops.top_k(flat_total, k)  # (B, K) indices into K * V
        end_index = ops.arange(k) * vocab_size + end_id  # (K,)
        end_in_top = ops.any(ops.equal(top[:, None, :], end_index[None, :, None]), axis=-1)
        end_score = ops.where(end_in_top, total[:, :, end_id], -math.inf)  # (B, K)
        end_rank = end_score / float(t + 1) ** length_penalty
        pool_rank = ops.concatenate([done_rank, end_rank], axis=1)  # (B, 2K)
        done_rank, keep = ops.top_k(pool_rank, k)  # (B, K)
        ended_tokens = _write_at(alive_tokens, t, ops.full((batch, k), end_id, "int32"))
        done_score = _gather_beams(ops.concatenate([done_score, end_score], 1), keep)
        done_length = _gather_beams(
            ops.concatenate([done_length, ops.full((batch, k), t + 1, "int32")], 1), keep
        )
        done_tokens = _gather_beams(ops.concatenate([done_tokens, ended_tokens], 1), keep)
        done_alphas = _gather_beams(ops.concatenate([done_alphas, alive_alphas], 1), keep)
        done_betas = _gather_beams(ops.concatenate([done_betas, alive_betas], 1), keep)

        # The live beams go on with their K best continuations other than <end>.
        is_end = ops.arange(vocab_size) == end_id
        going_on = ops.where(is_end[None, None, :], -math.inf, total)
        alive_score, best = ops.top_k(ops.reshape(going_on, (batch, k * vocab_size)), k)
        parent = ops.cast(best // vocab_size, "int32")  # (B, K)
        word = ops.cast(best % vocab_size, "int32")
        alive_tokens = _write_at(_gather_beams(alive_tokens, parent), t, word)
        alive_alphas = _gather_beams(alive_alphas, parent)
        alive_betas = _gather_beams(alive_betas, parent)
        rows = ops.reshape(parent + flat_offsets, (-1,))  # (B * K,)
        state = tuple(x if i in static else ops.take(x, rows, axis=0) for i, x in enumerate(state))
        tokens = ops.reshape(word, (-1,))

    # The best finished hypothesis (the pool is sorted), else the best live one.
    any_done = ops.isfinite(done_score[:, 0])  # (B,)
    alive_rank = alive_score / float(max_length) ** length_penalty
    best_alive = ops.cast(ops.argmax(alive_rank, axis=1), "int32")[:, None]  # (B, 1)

    def pick(done, alive):
        alive = _gather_beams(alive, best_alive)[:, 0]
        mask = ops.reshape(any_done, (-1,) + (1,) * (alive.ndim - 1))
        return ops.where(mask, done[:, 0], alive)

    return {
        "tokens": pick(done_tokens, alive_tokens),
        "scores": pick(done_score, alive_score),
        "lengths": pick(done_length, ops.full((batch, k), max_length, "int32")),
        "alphas": pick(done_alphas, alive_alphas),
        "betas": pick(done_betas, alive_betas),
    }
