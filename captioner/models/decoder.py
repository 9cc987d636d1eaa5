"""The LSTM caption decoder with soft attention, gating scalar and deep output."""

from __future__ import annotations

import keras
from keras import layers, ops

from captioner.models.attention import SoftAttention

ATTENTION_MODES = ("soft", "mean", "soft+mean")


@keras.saving.register_keras_serializable(package="captioner")
class AttentionDecoder(keras.layers.Layer):
    """Show, Attend and Tell decoder, written as one step function run over time.

    - initial state `h_0 = tanh(W_ih mean_i a_i)`, `c_0 = tanh(W_ic mean_i a_i)`;
    - context `z_t = beta_t * sum_i alpha_ti a_i`, `beta_t = sigmoid(w_beta h_{t-1})`;
    - LSTM on `[E y_{t-1}; z_t]`;
    - logits `L_o dropout(E y_{t-1} + L_h h_t + L_z z_t)`.

    The decoding state is the tuple `(h, c, annotations, projected)`, every entry with the
    batch first, so that a search can reorder or tile it along the batch. Its entries listed
    in `static_state_entries` (the annotations and their projection) never change from step
    to step. With `coverage`, the state ends with the attention summed so far, (B, L), and
    attention scores see it (`SoftAttention`).

    Args:
        vocab_size: V.
        embed_dim: E.
        units: H, the LSTM size.
        attention_dim: A.
        dropout: rate before the output layer.
        attention: "soft"; "mean" for the ablation that uses the mean annotation (uniform
            alpha) at every step; "soft+mean" for both: the context is the gated attended
            annotation with the mean annotation beside it, `z_t = [beta_t sum_i alpha_ti a_i;
            mean_i a_i]` (not in the paper: the mean carries what the whole photo shows, so
            attention need not gather it).
        coverage: soft attention that sees how much each cell has been attended so far
            (not in the paper).
    """

    static_state_entries = (2, 3)

    def __init__(
        self,
        vocab_size,
        embed_dim=64,
        units=256,
        attention_dim=128,
        dropout=0.3,
        attention="soft",
        coverage=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if coverage and attention == "mean":
            raise ValueError("coverage needs soft attention (the ablation has no weights)")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.units = units
        self.attention_dim = attention_dim
        self.dropout_rate = dropout
        self.attention_mode = attention
        self.coverage = coverage
        self.embedding = layers.Embedding(vocab_size, embed_dim, name="E")
        self.init_h = layers.Dense(units, activation="tanh", name="W_ih")
        self.init_c = layers.Dense(units, activation="tanh", name="W_ic")
        # The ablation has no attention weights at all.
        self.attention = (
            SoftAttention(attention_dim, coverage=coverage, name="attention")
            if attention != "mean"
            else None
        )
        self.gate = layers.Dense(1, activation="sigmoid", name="w_beta")
        self.cell = layers.LSTMCell(units, name="lstm")
        self.out_h = layers.Dense(embed_dim, use_bias=False, name="L_h")
        self.out_z = layers.Dense(embed_dim, use_bias=False, name="L_z")
        self.dropout = layers.Dropout(dropout)
        self.out = layers.Dense(vocab_size, name="L_o")

    def initial_state(self, annotations):
        """(B, L, D) annotations -> the decoding state `(h_0, c_0, annotations, projected)`,
        followed by the coverage `(B, L)` zeros with `coverage`."""
        mean = ops.mean(annotations, axis=1)  # (B, D)
        if self.attention is None:
            projected = annotations  # unused by the ablation; keeps the state's structure
        else:
            projected = self.attention.project(annotations)  # (B, L, A), once per image
        coverage = (ops.zeros_like(annotations[..., 0]),) if self.coverage else ()
        return self.init_h(mean), self.init_c(mean), annotations, projected, *coverage

    def _attend(self, h, annotations, projected, coverage):
        """Context with gate, alpha and beta for query `h`; `coverage`: () or (cov,)."""
        if self.attention is None:
            length = ops.shape(annotations)[1]
            alpha = ops.ones_like(annotations[..., 0]) / ops.cast(length, annotations.dtype)
            context = ops.mean(annotations, axis=1)
        else:
            context, alpha = self.attention(annotations, projected, h, *coverage)
        beta = self.gate(h)  # (B, 1)
        context = beta * context
        if self.attention_mode == "soft+mean":
            context = ops.concatenate([context, ops.mean(annotations, axis=1)], axis=-1)  # (B, 2D)
        return context, alpha, beta[:, 0]

    @staticmethod
    def _covered(coverage, alpha):
        """The state's coverage entry after a step that attended with `alpha`: () or (cov,)."""
        return tuple(total + alpha for total in coverage)

    def _loop_inputs(self, embedded, state):
        """What the time loop reads, prepared before it.

        Args:
            embedded: (B, T, E) the embedded previous words.
            state: the decoding state the loop starts from.

        Returns:
            (per-step inputs (B, T, ·), constants the steps share): here the words, and
            nothing shared. Decoders override it to compute once what every step would
            otherwise recompute.
        """
        return embedded, None

    def _recur(self, inputs, constants, state, training):
        """One LSTM step from `_loop_inputs` at that step; returns (h, z, alpha, beta, state)."""
        h_prev, c_prev, annotations, projected, *coverage = state
        z, alpha, beta = self._attend(h_prev, annotations, projected, coverage)
        x = ops.concatenate([inputs, z], axis=-1)  # (B, E + D)
        h, (_, c) = self.cell(x, [h_prev, c_prev], training=training)
        state = (h, c, annotations, projected, *self._covered(coverage, alpha))
        return h, z, alpha, beta, state

    def _logits(self, embedded, h, z, training):
        """Deep output; works on (B, ·) and (B, T, ·) inputs alike."""
        hidden = embedded + self.out_h(h) + self.out_z(z)
        return self.out(self.dropout(hidden, training=training))

    def step(self, tokens, state, training=False):
        """One decoding step.

        Args:
            tokens: (B,) int ids of the previous words.
            state: the decoding state.

        Returns:
            logits (B, V), the new state, alpha (B, L), beta (B,).
        """
        embedded = self.embedding(tokens)  # (B, E)
        inputs, constants = self._loop_inputs(embedded[:, None], state)
        h, z, alpha, beta, state = self._recur(inputs[:, 0], constants, state, training)
        return self._logits(embedded, h, z, training), state, alpha, beta

    def call(self, annotations, caption_in, training=False, repeats=1):
        """Teacher forcing: the step function run over the given previous words.

        Args:
            annotations: (B, L, D).
            caption_in: (B·C, T) ids, `<start> w1 … w_{T-1}` (padded): C = `repeats`
                captions per image, an image's captions in consecutive rows.
            repeats: C. The initial state, and with it the projection `W_a a` of the
                annotations, is computed once per image, then repeated for its captions.

        Returns:
            logits (B·C, T, V), alphas (B·C, T, L), betas (B·C, T).
        """
        embedded = self.embedding(caption_in)  # (B·C, T, E)
        state = self.initial_state(annotations)
        if repeats > 1:
            state = tuple(ops.repeat(x, repeats, axis=0) for x in state)  # B -> B·C rows
        inputs, constants = self._loop_inputs(embedded, state)
        hs, zs, alphas, betas = [], [], [], []
        for t in range(caption_in.shape[1]):
            h, z, alpha, beta, state = self._recur(inputs[:, t], constants, state, training)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
            betas.append(beta)
        hs = ops.stack(hs, axis=1)  # (B, T, H)
        zs = ops.stack(zs, axis=1)  # (B, T, D)
        logits = self._logits(embedded, hs, zs, training)  # (B, T, V)
        return logits, ops.stack(alphas, axis=1), ops.stack(betas, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embed_dim=self.embed_dim,
            units=self.units,
            attention_dim=self.attention_dim,
            dropout=self.dropout_rate,
            attention=self.attention_mode,
            coverage=self.coverage,
        )
        return config
