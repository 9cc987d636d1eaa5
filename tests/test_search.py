import numpy as np
from keras import ops

from captioner.search import greedy_search

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
