"""A decoder that attends after reading the previous word (two LSTMs, "top-down")."""

from __future__ import annotations

import keras
from keras import layers, ops

from captioner.models.decoder import AttentionDecoder


def built_kernel(cell, input_dim):
    """The input kernel (input_dim, 4H) of the Keras `LSTMCell` `cell`, built if need be, in
    the cell's compute dtype (read outside a layer call, a mixed-precision weight is not cast
    for us)."""
    if not cell.built:
        cell.build((None, input_dim))
    return ops.cast(cell.kernel, cell.compute_dtype)


def lstm_step(cell, input_gates, h, c):
    """One step of the Keras `LSTMCell` `cell` from its input's share of the gates.

    `input_gates` (B, 4H) is `inputs @ cell.kernel`, computed by the caller, which can then
    multiply the parts of the input known before the time loop once for all steps. The
    gates and their order (input, forget, cell, output) are `LSTMCell`'s; returns (h, c).
    """
    recurrent_kernel, bias = (
        ops.cast(w, cell.compute_dtype) for w in (cell.recurrent_kernel, cell.bias)
    )
    z = input_gates + ops.matmul(h, recurrent_kernel) + bias
    i, f, g, o = ops.split(z, 4, axis=-1)
    c = cell.recurrent_activation(f) * c + cell.recurrent_activation(i) * cell.activation(g)
    return cell.recurrent_activation(o) * cell.activation(c), c


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

    def _loop_inputs(self, embedded, state):
        """The attention LSTM's gates' share known before the loop, and its kernel's `h2` rows.

        The attention LSTM reads `[h2_{t-1}; mean_i a_i; E y_{t-1}]`. Only `h2` changes with
        the loop: the mean annotation's rows of the kernel are applied once per caption and
        the words' rows once for all steps, (B, T, E) -> (B, T, 4H); the `h2` rows, sliced
        once, are what the steps share (a slice per step costs its gradient per step).
        """
        annotations = state[4]
        hidden, depth = self.units, annotations.shape[-1]
        kernel = built_kernel(self.attention_cell, hidden + depth + self.embed_dim)
        mean = ops.mean(annotations, axis=1)  # (B, D)
        words = ops.matmul(embedded, kernel[hidden + depth :])  # (B, T, 4H)
        gates = words + ops.matmul(mean, kernel[hidden : hidden + depth])[:, None, :]
        return gates, kernel[:hidden]

    def _recur(self, inputs, constants, state, training):
        """One step from `_loop_inputs` at that step; returns (h2, z, alpha, beta, state)."""
        h1, c1, h2, c2, annotations, projected, *coverage = state
        h1, c1 = lstm_step(self.attention_cell, inputs + ops.matmul(h2, constants), h1, c1)
        # The paper's attention and gate, queried with the state that has read the word.
        z, alpha, beta = self._attend(h1, annotations, projected, coverage)
        x2 = ops.concatenate([z, h1], axis=-1)  # (B, D + H)
        h2, (_, c2) = self.cell(x2, [h2, c2], training=training)
        state = (h1, c1, h2, c2, annotations, projected, *self._covered(coverage, alpha))
        return h2, z, alpha, beta, state
