"""Soft (additive) visual attention of Show, Attend and Tell."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="captioner")
class SoftAttention(keras.layers.Layer):
    """`e_ti = w_e^T tanh(W_a a_i + W_h h_{t-1} + b)`, `alpha_t = softmax_i(e_t)`.

    `W_a a_i` does not depend on t: `project` computes it once per image and `call` takes
    the projection, so the time loop only adds `W_h h_{t-1}`.

    With `coverage`, the score also sees how much attention each cell has had so far,
    `e_ti = w_e^T tanh(W_a a_i + W_h h_{t-1} + w_c cov_ti + b)` with
    `cov_ti = sum_{t' < t} alpha_t'i` (a coverage vector, as in Tu et al. 2016): a model can
    then tell the object it has described from the one it has not (not in the paper).

    Args:
        units: the attention size A.
        coverage: add the coverage term.
    """

    def __init__(self, units=128, coverage=False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.coverage = coverage
        self.annotation_proj = layers.Dense(units, use_bias=False, name="W_a")
        self.state_proj = layers.Dense(units, use_bias=True, name="W_h")
        self.score = layers.Dense(1, use_bias=False, name="w_e")
        self.coverage_proj = layers.Dense(units, use_bias=False, name="w_c") if coverage else None

    def project(self, annotations):
        """(B, L, D) -> (B, L, A)."""
        return self.annotation_proj(annotations)

    def call(self, annotations, projected, state, coverage=None):
        """Attention weights and context for one step.

        Args:
            annotations: (B, L, D) grid features.
            projected: (B, L, A), `project(annotations)`.
            state: (B, H) the previous hidden state.
            coverage: (B, L) the attention summed over the earlier steps (with `coverage`).

        Returns:
            context (B, D) = sum_i alpha_i a_i, and alpha (B, L), summing to 1 over L.
        """
        scores_in = projected + self.state_proj(state)[:, None, :]  # (B, L, A)
        if self.coverage_proj is not None:
            scores_in = scores_in + self.coverage_proj(coverage[..., None])
        hidden = ops.tanh(scores_in)
        alpha = ops.softmax(ops.squeeze(self.score(hidden), -1), axis=-1)  # (B, L)
        context = ops.einsum("bl,bld->bd", alpha, annotations)  # (B, D)
        return context, alpha

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, coverage=self.coverage)
        return config
