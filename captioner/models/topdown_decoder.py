"""A decoder that attends after reading the previous word (two LSTMs, "top-down")."""

from __future__ import annotations

import keras
from keras import layers, ops

from captioner.models.decoder import AttentionDecoder


@keras.saving.register_keras_serializable(package="captioner")
class TopDownDecoder(AttentionDecoder):
    """Attention chosen by a state that has read the previous word (Anderson et al., 2018).

    In the paper's decoder (`AttentionDecoder`) the attention for word t comes from
    h_{t-1}, before the LSTM has read word t-1, so the model picks where to look before it
    knows what it just said. Here a first LSTM reads the word, then attention is queried with
    its new state, and a second LSTM writes:

    - attention LSTM: `h1_t, c1_t = LSTM_1([h2_{t-1}; mean_i a_i; E y_{t-1}], h1_{t-1}, c1_{t-1})`;
    - attention: `e_ti = w_e^T tanh(W_a a_i + W_h h1_t + b)`, `alpha_t = softmax_i(e_t)`;
    - context with gating scalar: `beta_t = sigmoid(w_beta h1_t)`,
      `z_t = beta_t sum_i alpha_ti a_i`;
    - language LSTM: `h2_t, c2_t = LSTM_2([z_t; h1_t], h2_{t-1}, c2_{t-1})`;
    - logits `L_o dropout(E y_{t-1} + L_h h2_t + L_z z_t)`, the paper's deep output;
    - initial states `tanh(W mean_i a_i)` for both LSTMs.

    The decoding state is `(h1, c1, h2, c2, annotations, projected)`, then the coverage
    with `coverage`; annotations and projection never change (`static_state_entries`).
    Search, export, attention maps and grounding use it as they use `AttentionDecoder`.
    Arguments as `AttentionDecoder`'s.
    """

    static_state_entries = (4, 5)

    def __init__(self, vocab_size, **kwargs):
        super().__init__(vocab_size, **kwargs)
        self.attention_cell = layers.LSTMCell(self.units, name="attention_lstm")
        self.init_h2 = layers.Dense(self.units, activation="tanh", name="W_ih2")
        self.init_c2 = layers.Dense(self.units, activation="tanh", name="W_ic2")

    def initial_state(self, annotations):
        """(B, L, D) annotations -> `(h1_0, c1_0, h2_0, c2_0, annotations, projected)`,
        then the coverage with `coverage`."""
        h1, c1, annotations, projected, *coverage = super().initial_state(annotations)
        mean = ops.mean(annotations, axis=1)  # (B, D)
        h2, c2 = self.init_h2(mean), self.init_c2(mean)
        return h1, c1, h2, c2, annotations, projected, *coverage

    def _recur(self, embedded, state, training):
        """One step from an embedded previous word; returns (h2, z, alpha, beta, state)."""
        h1, c1, h2, c2, annotations, projected, *coverage = state
        mean = ops.mean(annotations, axis=1)  # (B, D)
        x1 = ops.concatenate([h2, mean, embedded], axis=-1)  # (B, H + D + E)
        h1, (_, c1) = self.attention_cell(x1, [h1, c1], training=training)
        # The paper's attention and gate, queried with the state that has read the word.
        z, alpha, beta = self._attend(h1, annotations, projected, coverage)
        x2 = ops.concatenate([z, h1], axis=-1)  # (B, D + H)
        h2, (_, c2) = self.cell(x2, [h2, c2], training=training)
        state = (h1, c1, h2, c2, annotations, projected, *self._covered(coverage, alpha))
        return h2, z, alpha, beta, state
