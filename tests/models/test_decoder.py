import keras
import numpy as np
import pytest
from keras import ops

from captioner.models.attention import SoftAttention
from captioner.models.decoder import AttentionDecoder
from captioner.models.topdown_decoder import TopDownDecoder, built_kernel, lstm_step

B, L, D, V, T = 3, 6, 8, 11, 5


@pytest.fixture
def annotations():
    return np.random.default_rng(0).normal(size=(B, L, D)).astype(np.float32)


def test_attention_weights_sum_to_one_over_the_grid(annotations):
    attention = SoftAttention(7)
    projected = attention.project(annotations)
    assert tuple(projected.shape) == (B, L, 7)
    h = np.random.default_rng(1).normal(size=(B, 16)).astype(np.float32)
    context, alpha = attention(annotations, projected, h)
    alpha = ops.convert_to_numpy(alpha)
    assert alpha.shape == (B, L) and np.all(alpha > 0)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)
    # the context is the alpha-weighted sum of the annotations
    expected = np.einsum("bl,bld->bd", alpha, annotations)
    np.testing.assert_allclose(ops.convert_to_numpy(context), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", [AttentionDecoder, TopDownDecoder])
@pytest.mark.parametrize(
    "options",
    [
        {"attention": "soft"},
        {"attention": "mean"},
        {"attention": "soft", "coverage": True},
        {"attention": "soft+mean"},
    ],
)
def test_teacher_forcing_equals_the_step_function_in_a_loop(annotations, options, kind):
    decoder = kind(V, embed_dim=4, units=16, attention_dim=7, **options)
    caption_in = np.random.default_rng(2).integers(1, V, size=(B, T)).astype(np.int32)
    logits, alphas, betas = (ops.convert_to_numpy(x) for x in decoder(annotations, caption_in))
    assert logits.shape == (B, T, V) and alphas.shape == (B, T, L)
    state = decoder.initial_state(annotations)
    for t in range(T):
        step_logits, state, alpha, beta = decoder.step(caption_in[:, t], state)
        step_logits, alpha, beta = (ops.convert_to_numpy(x) for x in (step_logits, alpha, beta))
        np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(alpha, alphas[:, t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(beta, betas[:, t], rtol=1e-5, atol=1e-6)


def test_lstm_step_from_the_inputs_share_of_the_gates_is_the_keras_cell():
    # The top-down decoder multiplies the parts of its attention LSTM's input known before
    # the time loop once, then finishes each step with `lstm_step`: the same weights must
    # give the cell's results.
    rng = np.random.default_rng(1)
    cell = keras.layers.LSTMCell(7)
    x, h, c = (rng.normal(size=(B, n)).astype(np.float32) for n in (5, 7, 7))
    kernel = built_kernel(cell, 5)
    cell.bias.assign(rng.normal(size=cell.bias.shape))  # the forget gate's ones are not enough
    expected_h, (_, expected_c) = cell(x, [h, c])
    split = ops.matmul(x[:, :2], kernel[:2]) + ops.matmul(x[:, 2:], kernel[2:])
    got_h, got_c = lstm_step(cell, split, h, c)
    np.testing.assert_allclose(ops.convert_to_numpy(got_h), expected_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(got_c), expected_c, rtol=1e-5, atol=1e-6)


def test_topdown_attention_lstm_reads_its_whole_input_as_the_keras_cell(annotations):
    # The top-down decoder applies its attention LSTM's kernel rows for the words and the
    # mean annotation before the loop: its h1 must be the cell's on [h2; mean; E y].
    decoder = TopDownDecoder(V, embed_dim=4, units=16, attention_dim=7)
    words = np.array([1, 5, 7], np.int32)
    state = decoder.initial_state(annotations)
    _, after, _, _ = decoder.step(words, state)
    h1, c1, h2 = state[:3]
    x1 = ops.concatenate([h2, annotations.mean(axis=1), decoder.embedding(words)], axis=-1)
    expected_h1, (_, expected_c1) = decoder.attention_cell(x1, [h1, c1])
    np.testing.assert_allclose(ops.convert_to_numpy(after[0]), expected_h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(after[1]), expected_c1, rtol=1e-5, atol=1e-6)


def test_mean_ablation_attends_uniformly(annotations):
    decoder = AttentionDecoder(V, embed_dim=4, units=16, attention="mean")
    _, alphas, _ = decoder(annotations, np.ones((B, 2), np.int32))
    np.testing.assert_allclose(ops.convert_to_numpy(alphas), 1.0 / L, rtol=1e-6)
    assert decoder.attention is None


@pytest.mark.parametrize("kind", [AttentionDecoder, TopDownDecoder])
def test_soft_plus_mean_context_is_the_attended_and_the_mean_annotation(annotations, kind):
    decoder = kind(V, embed_dim=4, units=16, attention_dim=7, attention="soft+mean")
    state = decoder.initial_state(annotations)
    embedded = decoder.embedding(np.ones((B, 1), np.int32))
    inputs, constants = decoder._loop_inputs(embedded, state)
    _, z, alpha, beta, _ = decoder._recur(inputs[:, 0], constants, state, False)
    z, alpha, beta = (ops.convert_to_numpy(x) for x in (z, alpha, beta))
    assert z.shape == (B, 2 * D)
    attended = beta[:, None] * np.einsum("bl,bld->bd", alpha, annotations)
    np.testing.assert_allclose(z[:, :D], attended, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z[:, D:], annotations.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(alpha, 1.0 / L)  # it attends: not the ablation's uniform weights


def test_initial_state_comes_from_the_mean_annotation(annotations):
    decoder = AttentionDecoder(V, embed_dim=4, units=16, attention_dim=7)
    h0, c0 = (ops.convert_to_numpy(x) for x in decoder.initial_state(annotations)[:2])
    shuffled = annotations[:, ::-1]  # same mean, other order
    h0b, c0b = (ops.convert_to_numpy(x) for x in decoder.initial_state(shuffled)[:2])
    np.testing.assert_allclose(h0, h0b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c0, c0b, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(h0) < 1)  # tanh


def test_unknown_attention_mode_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        AttentionDecoder(V, attention="hard")
    with pytest.raises(ValueError, match="coverage needs soft attention"):
        AttentionDecoder(V, attention="mean", coverage=True)


@pytest.mark.parametrize("kind", [AttentionDecoder, TopDownDecoder])
def test_coverage_sums_the_attention_so_far_and_changes_where_it_looks(annotations, kind):
    decoder = kind(V, embed_dim=4, units=16, attention_dim=7, coverage=True)
    state = decoder.initial_state(annotations)
    np.testing.assert_array_equal(ops.convert_to_numpy(state[-1]), np.zeros((B, L)))
    alphas = []
    for word in (1, 2, 3):
        _, state, alpha, _ = decoder.step(np.full((B,), word, np.int32), state)
        alphas.append(ops.convert_to_numpy(alpha))
    np.testing.assert_allclose(ops.convert_to_numpy(state[-1]), sum(alphas), rtol=1e-6)
    # the same query over a different coverage scores the cells differently
    attention = decoder.attention
    projected = attention.project(annotations)
    h = np.zeros((B, attention.state_proj.kernel.shape[0]), np.float32)
    fresh = attention(annotations, projected, h, np.zeros((B, L), np.float32))[1]
    covered = attention(annotations, projected, h, np.eye(L, dtype=np.float32)[[0, 1, 2]] * 3)[1]
    assert np.abs(ops.convert_to_numpy(fresh) - ops.convert_to_numpy(covered)).max() > 1e-4


def test_topdown_attention_reads_the_previous_word_first(annotations):
    # The paper's first attention map comes from h_0 alone: it cannot depend on the first
    # input word. The top-down decoder's does, since its attention LSTM reads the word first.
    def first_alpha(decoder, word):
        _, alphas, _ = decoder(annotations, np.full((B, 1), word, np.int32))
        return ops.convert_to_numpy(alphas)[:, 0]

    paper = AttentionDecoder(V, embed_dim=4, units=16, attention_dim=7)
    np.testing.assert_allclose(first_alpha(paper, 1), first_alpha(paper, 2), atol=1e-7)
    topdown = TopDownDecoder(V, embed_dim=4, units=16, attention_dim=7)
    first_alpha(topdown, 1)  # builds it; then words far enough apart to move the map clearly
    embeddings = topdown.embedding.embeddings
    embeddings.assign(np.random.default_rng(2).normal(size=embeddings.shape))
    assert np.abs(first_alpha(topdown, 1) - first_alpha(topdown, 2)).max() > 1e-4
    state = topdown.initial_state(annotations)
    assert len(state) == 6 and topdown.static_state_entries == (4, 5)
