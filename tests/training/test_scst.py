"""Self-critical sequence training: rewards, the REINFORCE gradient's sign, the stage end to end."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner.cli import main
from captioner.config import TrainConfig
from captioner.data.vocabulary import Vocabulary
from captioner.evaluation.cider import CiderD
from captioner.inference.captioner import Captioner
from captioner.inference.search import searched_log_probs
from captioner.runtime import repeatable_steps
from captioner.training.scst import (
    ScstStep,
    caption_ids,
    check_scst,
    leave_one_out_baseline,
    padding_cut,
    reference_ids,
    scst_loss,
    sequence_log_probs,
)
from tests.helpers import TINY_WORDS, tiny_model
from tests.test_cli import TINY_MODEL

END = 2
# The ids of the tiny model's vocabulary (`<pad>` 0, `<start>` 1, `<end>` 2, `<unk>` 3).
OPTIONS = dict(start_id=1, end_id=END, banned_ids=(0, 1, 3), pad_id=0, max_length=5)


def test_reference_and_caption_ids():
    targets = np.array([[[5, 6, END, 0], [7, END, 0, 0], [0, 0, 0, 0]]])
    assert reference_ids(targets, END) == [[(5, 6), (7,)]]
    assert caption_ids(np.array([[5, 6, END, 9], [4, 0, 0, 0]]), END) == [(5, 6), (4,)]


def test_the_samples_baseline_is_the_mean_of_the_other_samples():
    rewards = np.array([[1.0, 2.0, 6.0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(leave_one_out_baseline(rewards), [[4, 3.5, 1.5], [0.5, 0.5, 0.5]])


@pytest.mark.parametrize("baseline", ["greedy", "samples"])
def test_a_step_measures_samples_against_its_baseline(baseline, monkeypatch):
    model = tiny_model()
    captioner = Captioner(model, Vocabulary(TINY_WORDS), beam_size=1)
    # two images with two references each, as `EpochBatches` gives them: (B, C, T)
    targets = np.array([[[4, 5, END, 0], [6, END, 0, 0]], [[7, 8, 9, END], [4, END, 0, 0]]])
    scorer = CiderD(reference_ids(targets, END))
    scorer.score = lambda caption, refs: float(len(caption))  # rewards that differ
    step = ScstStep(captioner, keras.optimizers.SGD(0.01), scorer, samples=3, baseline=baseline)
    greedy_calls = []
    greedy = step._greedy
    monkeypatch.setattr(step, "_greedy", lambda inputs: greedy_calls.append(1) or greedy(inputs))
    images = np.random.default_rng(2).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    before = [w.numpy().copy() for w in step.variables]
    logs = step(((tf.constant(images), None), tf.constant(targets)))
    assert set(logs) == {"loss", "reward", "baseline", "penalty"} and np.isfinite(logs["loss"])
    assert len(greedy_calls) == (baseline == "greedy")  # the samples' baseline decodes none
    if baseline == "samples":  # each sample against the mean of the others: same mean
        assert logs["baseline"] == pytest.approx(logs["reward"])
    assert logs["loss"] != 0.0
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, step.variables))


def test_the_update_runs_over_the_longest_sample_only_and_learns_the_same():
    tokens = np.array([[5, 6, END, 0, 0, 0], [8, END, 0, 0, 0, 0]])
    np.testing.assert_array_equal(padding_cut(tokens), tokens[:, :3])
    unended = np.array([[5, 6, 7, 8], [9, END, 0, 0]])  # a sample cut at the longest length
    np.testing.assert_array_equal(padding_cut(unended), unended)
    # The padding the cut leaves out changes neither the loss nor its gradient.
    model = tiny_model()
    images = np.random.default_rng(3).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    padded = tf.constant([[[5, 6, 7, END, 0, 0], [8, 9, END, 0, 0, 0]]], tf.int32)
    cut = tf.constant(padding_cut(padded.numpy().reshape(2, -1)).reshape(1, 2, -1))
    assert cut.shape == (1, 2, 4)
    variables = model.decoder.trainable_variables
    results = []
    for samples in (padded, cut):
        with tf.GradientTape() as tape:
            loss, penalty = scst_loss(
                model, images, samples, tf.constant([0.7, -0.7]), OPTIONS, penalty_weight=0.5
            )
        results.append((float(loss), float(penalty), tape.gradient(loss, variables)))
    (loss_p, penalty_p, grads_p), (loss_c, penalty_c, grads_c) = results
    assert loss_c == pytest.approx(loss_p, rel=1e-6) and penalty_c == pytest.approx(penalty_p)
    for g_p, g_c in zip(grads_p, grads_c, strict=True):
        np.testing.assert_allclose(
            tf.convert_to_tensor(g_c), tf.convert_to_tensor(g_p), rtol=1e-5, atol=1e-7
        )


def test_steps_from_the_same_start_and_seed_repeat_exactly():
    # as `captioner train` runs them: a seeded run gives the same numbers again
    targets = np.array([[[4, 5, END, 0], [6, END, 0, 0]], [[7, 8, 9, END], [4, END, 0, 0]]])
    images = np.random.default_rng(4).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)

    def run():
        keras.utils.set_random_seed(0)
        captioner = Captioner(tiny_model(), Vocabulary(TINY_WORDS), beam_size=1)
        scorer = CiderD(reference_ids(targets, END))
        step = ScstStep(captioner, keras.optimizers.Adam(0.01), scorer, samples=3, seed=5)
        with repeatable_steps():
            logs = [step(((tf.constant(images), None), tf.constant(targets))) for _ in range(3)]
        return logs, [w.numpy() for w in step.variables]

    (logs_a, weights_a), (logs_b, weights_b) = run(), run()
    assert logs_a == logs_b and logs_a[0] != logs_a[2]
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_sample_above_the_baseline_gains_probability_and_one_below_loses():
    model = tiny_model()
    images = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    samples = tf.constant([[[5, 6, 7, END], [8, 9, END, 0]]], tf.int32)  # (B=1, K=2, T)
    before = sequence_log_probs(model, images, samples, OPTIONS).numpy()
    variables = model.decoder.trainable_variables
    optimizer = keras.optimizers.SGD(0.05)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss, _ = scst_loss(model, images, samples, tf.constant([1.0, -1.0]), OPTIONS)
        optimizer.apply(tape.gradient(loss, variables), variables)
    after = sequence_log_probs(model, images, samples, OPTIONS).numpy()
    assert after[0] > before[0]  # rewarded above the baseline
    assert after[1] < before[1]  # below it
    # No advantage, no change.
    with tf.GradientTape() as tape:
        loss, _ = scst_loss(model, images, samples, tf.constant([0.0, 0.0]), OPTIONS)
    assert all(float(tf.reduce_max(tf.abs(g))) == 0 for g in tape.gradient(loss, variables))


def test_the_penalty_weight_spreads_the_samples_attention():
    keras.utils.set_random_seed(0)  # the descent below is checked from a known start
    model = tiny_model()
    images = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    samples = tf.constant([[[5, 6, 7, END], [8, 9, END, 0]]], tf.int32)
    no_advantage = tf.constant([0.0, 0.0])
    loss, penalty = scst_loss(model, images, samples, no_advantage, OPTIONS, penalty_weight=0.5)
    assert float(loss) == pytest.approx(0.5 * float(penalty)) and float(penalty) > 0
    # By hand: the mean over the two captions of sum_i (1 - sum_t alpha_ti)^2, real tokens only.
    start = np.full((1, 2, 1), OPTIONS["start_id"])
    caption_in = np.concatenate([start, samples.numpy()[..., :-1]], axis=-1)
    alphas = model((images, caption_in), training=False)["alphas"].numpy()  # (2, T, L)
    real = (samples.numpy().reshape(2, -1) != 0)[..., None]
    expected = np.mean(np.sum((1 - (alphas * real).sum(axis=1)) ** 2, axis=-1))
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    variables = model.decoder.trainable_variables
    optimizer = keras.optimizers.SGD(0.05)
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss, _ = scst_loss(model, images, samples, no_advantage, OPTIONS, penalty_weight=1.0)
        optimizer.apply(tape.gradient(loss, variables), variables)
    _, after = scst_loss(model, images, samples, no_advantage, OPTIONS)
    assert float(after) < float(penalty)  # no reward, only the penalty: it falls


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="--scst-samples"):
        check_scst(TrainConfig(scst_epochs=1, scst_samples=0))
    with pytest.raises(ValueError, match="fine-tune"):
        check_scst(TrainConfig(scst_epochs=1, fine_tune_blocks=1))
    with pytest.raises(ValueError, match="--scst-baseline must be one of greedy, samples"):
        check_scst(TrainConfig(scst_epochs=1, scst_baseline="mean"))
    with pytest.raises(ValueError, match="--scst-samples must be at least 2, got 1"):
        check_scst(TrainConfig(scst_epochs=1, scst_baseline="samples", scst_samples=1))
    with pytest.raises(ValueError, match="--scst-penalty-weight must be 0"):
        check_scst(TrainConfig(scst_epochs=1, scst_penalty_weight=-0.1))
    check_scst(TrainConfig())


def test_samples_are_scored_under_the_distribution_they_are_drawn_from():
    # Banned words and a first `<end>` are never drawn, so they get no probability.
    logits = tf.random.stateless_normal((2, 3, 7), seed=(0, 1))
    probs = np.exp(searched_log_probs(logits, **OPTIONS).numpy())
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert (probs[:, :, [0, 1, 3]] == 0).all() and (probs[:, 0, END] == 0).all()
    assert (probs[:, 1:, END] > 0).all()
    # Otherwise the loss could fall by raising the never-drawn words' logits, changing no
    # sample's chance: the advantages must not reach the output bias of those words.
    model = tiny_model()
    images = np.random.default_rng(1).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    samples = tf.constant([[[5, 6, 7, END], [8, 9, END, 0]]], tf.int32)
    bias = model.decoder.out.bias
    with tf.GradientTape() as tape:
        loss, _ = scst_loss(model, images, samples, tf.constant([-1.0, -1.0]), OPTIONS)
    gradient = tape.gradient(loss, bias).numpy()
    assert (gradient[[0, 1, 3]] == 0).all() and (gradient[[5, 8]] != 0).all()


@pytest.mark.slow  # about 60 s: stage 1, the stage added, again, one more epoch, beam search
def test_the_stage_is_added_to_a_finished_run_logs_and_resumes(tmp_path, capsys):
    data = tmp_path / "synth"
    synth = ["synth", "--out", str(data), "--num-train", "12", "--num-val", "4"]
    assert main([*synth, "--num-test", "2", "--image-size", "64"]) == 0
    run_dir = tmp_path / "run"
    first = ["train", "--data", str(data / "dataset.json"), "--out", str(run_dir), *TINY_MODEL]
    first += ["--no-tensorboard", "--quiet"]
    assert main(first) == 0  # cross-entropy only; the stage is added to the finished run
    assert [row["stage"] for row in json.loads((run_dir / "history.json").read_text())] == [1]
    args = [*first, "--scst-epochs", "1", "--scst-samples", "2"]
    assert main(args) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["stage"] for row in history] == [1, 3]
    assert history[1]["epoch"] == 2 and {"reward", "baseline", "val_bleu4"} <= set(history[1])
    assert (run_dir / "scst_checkpoint.npz").is_file()
    assert "self-critical training (stage 3)" in capsys.readouterr().out
    assert main(args) == 0  # the same command again: nothing left to do
    assert "already complete" in capsys.readouterr().out
    args[args.index("--scst-epochs") + 1] = "2"  # one more epoch of the finished stage
    assert main(args) == 0
    history = json.loads((run_dir / "history.json").read_text())
    assert [(row["stage"], row["epoch"]) for row in history] == [(1, 1), (3, 2), (3, 3)]
    # beam search works on the result
    image = data / "images" / "test" / "test_00000.png"
    assert main(["caption", "--model", str(run_dir), str(image), "--beam-size", "2"]) == 0
