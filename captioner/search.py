"""Caption search, separate from the model: it only needs a step function.

A step function maps `(tokens (B,), state) -> (logits (B, V), state, alpha (B, L), beta (B,))`
where `state` is a tuple of tensors with the batch first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keras import ops

NEG_INF = -1e9


def _log_probs(logits, banned_ids: Sequence[int]):
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)  # (B, V)
    if banned_ids:
        vocab_size = ops.shape(log_probs)[-1]
        banned = ops.sum(ops.one_hot(ops.array(list(banned_ids)), vocab_size), axis=0) > 0
        log_probs = ops.where(banned[None, :], NEG_INF, log_probs)
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
