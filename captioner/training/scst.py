"""Self-critical sequence training (Rennie et al., 2017): a stage after cross-entropy.

Teacher forcing trains the model on the reference words; captions are judged free-running,
by CIDEr-D. This stage trains on what the model is judged by: for every training image it
draws `scst_samples` captions from the model, scores each with CIDEr-D against the image's
references, and measures it against a baseline b_k: the image's greedy caption's score
(`scst_baseline="greedy"`, Rennie et al.), or the mean score of the image's other samples
(`"samples"`, which needs no greedy decoding). REINFORCE then raises the log-probability of
the samples that beat the baseline and lowers that of the others: the loss is
`-mean_k (r_k - b_k) * log p(sample_k)`.

- Rewards: CIDEr-D (`captioner.evaluation.cider`) with the document frequencies of the
  training references, computed in-process. Captions and references are compared as
  vocabulary ids, as the model sees them: words under `--min-count` are all `<unk>`, and
  references are cut at `--max-length` words.
- Samples and greedy captions are decoded without dropout, and the log-probabilities of the
  samples are computed the same way, by teacher forcing them through the model, under the
  distribution they were drawn from (the searches' banned words removed).
- `scst_penalty_weight` adds the samples' doubly stochastic attention penalty to the loss,
  as cross-entropy training does for the reference captions (0: the stage trains without).
- The stage starts from the best model so far (`model.keras`), trains the decoder only
  (the encoder stays as it was), with a fresh Adam at `scst_learning_rate`; validation,
  model selection and `history.json` continue those of the earlier stages (rows marked
  `"stage": 3`), and its checkpoint (`scst_checkpoint.npz`) makes it resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.config import TrainConfig
from captioner.data.batching import EpochBatches, InputLookup, encode_captions
from captioner.data.dataset import ImageRecord
from captioner.data.vocabulary import Vocabulary
from captioner.evaluation.cider import CiderD
from captioner.inference.captioner import Captioner
from captioner.inference.search import sample_search, searched_log_probs
from captioner.models.captioning_model import attention_penalty_sums
from captioner.training.checkpoint import SCST_CHECKPOINT_FILE
from captioner.training.later_stage import later_stage_trainer, load_best_model

SCST_LOSS_KEYS = ("loss", "reward", "baseline", "penalty")
# --scst-baseline values, and how the log names them
SCST_BASELINES = {"greedy": "the greedy caption", "samples": "the image's other samples"}


def check_scst(config: TrainConfig) -> None:
    """Refuses self-critical settings that cannot work, before anything is trained.

    Raises:
        ValueError: a negative number of epochs or penalty weight, fewer than one sample
            (two against the samples' baseline), a learning rate that is not positive, an
            unknown baseline, or fine-tuning in the same run.
    """
    if not config.scst_epochs:  # 0, or None before the settings are resolved
        return
    if config.scst_epochs < 0:
        raise ValueError(f"--scst-epochs must be 0 (no SCST) or more, got {config.scst_epochs}")
    if config.scst_samples < 1:
        raise ValueError(f"--scst-samples must be at least 1, got {config.scst_samples}")
    if config.scst_baseline not in SCST_BASELINES:
        raise ValueError(
            f"--scst-baseline must be one of {', '.join(SCST_BASELINES)}, "
            f"got {config.scst_baseline!r}"
        )
    if config.scst_baseline == "samples" and config.scst_samples < 2:
        raise ValueError(
            "--scst-baseline samples measures each sample against the others: "
            f"--scst-samples must be at least 2, got {config.scst_samples}"
        )
    if config.scst_penalty_weight is not None and not config.scst_penalty_weight >= 0:
        raise ValueError(
            f"--scst-penalty-weight must be 0 (none) or more, got {config.scst_penalty_weight}"
        )
    if not config.scst_learning_rate > 0:
        raise ValueError(f"--scst-learning-rate must be positive, got {config.scst_learning_rate}")
    if config.fine_tune_blocks:
        raise ValueError(
            "--scst-epochs with --fine-tune-blocks: the self-critical stage trains from the "
            "first stage's inputs; fine-tune in one run, then train SCST in another"
        )


def reference_ids(targets: np.ndarray, end_id: int) -> list[list[tuple[int, ...]]]:
    """(B, C, T) teacher-forcing targets `w… <end> <pad>…` -> every image's references as id
    tuples without `<end>` (all-padding rows, for images with fewer captions, left out)."""
    images = []
    for rows in targets:
        refs = []
        for row in rows:
            ids = tuple(int(i) for i in row if i != 0)
            if ids:
                refs.append(ids[:-1] if ids[-1] == end_id else ids)
        images.append(refs)
    return images


def caption_ids(tokens: np.ndarray, end_id: int) -> list[tuple[int, ...]]:
    """(N, T) searched tokens -> the captions as id tuples, cut at `<end>`."""
    captions = []
    for row in tokens:
        ids = []
        for i in row:
            if i == end_id or i == 0:
                break
            ids.append(int(i))
        captions.append(tuple(ids))
    return captions


def padding_cut(tokens: np.ndarray) -> np.ndarray:
    """(N, T) searched tokens -> (N, T') with T' the longest caption's length (`<end>`
    included): the positions after it are padding in every row, and the teacher-forced
    pass over them cost a quarter of a Flickr8k step for nothing (`benchmarks/scst_step.py`;
    the loss and its gradient leave padding out; each length T' compiles its own update,
    once a run)."""
    return tokens[:, : max(1, int(np.count_nonzero(tokens, axis=1).max()))]


def leave_one_out_baseline(rewards: np.ndarray) -> np.ndarray:
    """(B, K) sample rewards, K >= 2 -> (B, K): each sample's image's other samples' mean."""
    k = rewards.shape[1]
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)


def sequence_log_probs(model, inputs, tokens, search_options: dict):
    """The log-probability of whole captions under the distribution they were drawn from:
    the model's, teacher-forced (no dropout), with the search's banned words removed and
    `<end>` not first. Scoring them on the full softmax instead would let the loss fall
    without changing any sample's chance, by raising the never-drawn words: with mostly
    negative advantages, that is where the updates go, and the captions degrade.

    Args:
        model: the captioning model.
        inputs: (B, ...) images or cached features.
        tokens: (B, K, T) int32 captions, K per image: words, `<end>`, then 0.
        search_options: the sampling captioner's `search_options` (ids and banned words).

    Returns:
        (B·K,) the sum over each caption's real tokens (`<end>` included) of log p.
    """
    return _scored_samples(model, inputs, tokens, search_options)[0]


def _scored_samples(model, inputs, tokens, search_options: dict):
    """`sequence_log_probs`, and the samples' attention penalty: the mean over captions of
    sum_i (1 - sum_t alpha_ti)^2, as cross-entropy training measures it."""
    tokens = tf.cast(tokens, tf.int32)
    start = tf.fill(tf.concat([tf.shape(tokens)[:2], [1]], 0), search_options["start_id"])
    caption_in = tf.concat([start, tokens[..., :-1]], axis=-1)  # (B, K, T)
    outputs = model((inputs, caption_in), training=False)
    log_probs = searched_log_probs(outputs["logits"], **search_options)  # (B·K, T, V)
    targets = tf.reshape(tokens, (-1, tokens.shape[-1]))  # (B·K, T)
    token_log_probs = tf.gather(log_probs, targets, axis=-1, batch_dims=2)
    penalty_sum, captions = attention_penalty_sums(targets, outputs["alphas"])
    real = tf.cast(targets != 0, "float32")
    return tf.reduce_sum(token_log_probs * real, axis=-1), penalty_sum / captions


def scst_loss(model, inputs, tokens, advantages, search_options: dict, penalty_weight=0.0):
    """REINFORCE with a baseline, `-mean((r - b) * log p(sample))` over the samples, plus
    `penalty_weight` times the samples' attention penalty (`_scored_samples`).

    Returns:
        (loss, penalty): the loss to minimise and the penalty before weighting.
    """
    log_probs, penalty = _scored_samples(model, inputs, tokens, search_options)
    loss = -tf.reduce_mean(tf.cast(advantages, "float32") * log_probs)
    return loss + penalty_weight * penalty, penalty


class ScstStep:
    """One self-critical step on a batch `((inputs, caption_in), targets)` of `EpochBatches`,
    whose targets hold every reference of each image; a drop-in step for `Trainer`.

    Args:
        captioner: greedy `Captioner` of the model being trained (its search settings are
            also the sampling's).
        optimizer: a Keras optimiser.
        scorer: CIDEr-D with the training references' document frequencies, over id tuples.
        samples: captions drawn per image.
        baseline: "samples" or "greedy" (see the module's docstring).
        clip_norm: the global gradient-norm limit (0: none).
        seed: the sampling seed.
        penalty_weight: the weight of the samples' attention penalty in the loss (0: none).
    """

    loss_keys = SCST_LOSS_KEYS

    def __init__(
        self,
        captioner: Captioner,
        optimizer,
        scorer: CiderD,
        samples: int,
        baseline: str = "samples",
        clip_norm: float = 5.0,
        seed: int = 0,
        penalty_weight: float = 0.0,
    ):
        self.captioner = captioner
        self.model = captioner.model
        self.optimizer = optimizer
        self.scorer = scorer
        self.samples = samples
        self.baseline = baseline
        self.clip_norm = float(clip_norm)
        self.penalty_weight = float(penalty_weight)
        self.end_id = captioner.vocab.end_id
        self.seed = keras.random.SeedGenerator(seed)
        self.variables = self.model.decoder.trainable_variables  # the encoder stays as it was
        optimizer.build(self.variables)
        self._sample = tf.function(self._sample_graph)
        self._updates = {}  # one compiled update per sample length (`padding_cut`)

    def distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset  # one device

    def _annotations(self, inputs):
        if len(inputs.shape) == 3:  # cached grid features
            return self.model.annotate(inputs)
        return self.model.encode(inputs)[0]

    def _sample_graph(self, inputs):
        decoder = self.model.decoder
        state = decoder.initial_state(self._annotations(inputs))
        state = tuple(tf.repeat(x, self.samples, axis=0) for x in state)  # B -> B·K rows
        out = sample_search(decoder.step, state, seed=self.seed, **self.captioner.search_options)
        return out["tokens"]

    def _update_graph(self, inputs, tokens, advantages):
        with tf.GradientTape() as tape:
            loss, penalty = scst_loss(
                self.model,
                inputs,
                tokens,
                advantages,
                self.captioner.search_options,
                self.penalty_weight,
            )
        gradients = tape.gradient(loss, self.variables)
        if self.clip_norm > 0:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        self.optimizer.apply(gradients, self.variables)
        return loss, penalty

    def _greedy(self, inputs) -> np.ndarray:
        if len(inputs.shape) == 3:  # cached grid features
            return self.captioner.generate_from_features(inputs)["tokens"]
        return self.captioner.generate(inputs)["tokens"]

    def __call__(self, batch) -> dict[str, float]:
        (inputs, _), targets = batch
        references = reference_ids(targets.numpy(), self.end_id)
        k, score = self.samples, self.scorer.score
        tokens = self._sample(inputs).numpy()  # (B·K, T)
        sampled = caption_ids(tokens, self.end_id)
        rewards = np.array([score(s, references[i // k]) for i, s in enumerate(sampled)])
        rewards = rewards.reshape(len(references), k)
        if self.baseline == "samples":
            baseline = leave_one_out_baseline(rewards)
        else:
            greedy = caption_ids(self._greedy(inputs), self.end_id)
            greedy_rewards = [score(g, refs) for g, refs in zip(greedy, references, strict=True)]
            baseline = np.array(greedy_rewards)[:, None]  # (B, 1): one for all K samples
        advantages = (rewards - baseline).reshape(-1)
        tokens = padding_cut(tokens).reshape(len(references), k, -1)
        length = tokens.shape[-1]
        if length not in self._updates:
            self._updates[length] = tf.function(self._update_graph)
        loss, penalty = self._updates[length](
            inputs, tf.constant(tokens), tf.constant(advantages, tf.float32)
        )
        return {
            "loss": float(loss),
            "reward": float(rewards.mean()),
            "baseline": float(baseline.mean()),
            "penalty": float(penalty),
        }


def scst_batches_and_step(
    model,
    config: TrainConfig,
    vocab: Vocabulary,
    lookup: InputLookup,
    train_records: Sequence[ImageRecord],
) -> tuple[EpochBatches, ScstStep]:
    """The stage's batches, with every reference of an image in its batch row (they are what
    the samples are scored on), and its step: CIDEr-D with the training references' document
    frequencies, a fresh Adam at `config.scst_learning_rate`."""
    ids, counts = encode_captions(train_records, vocab, config.max_length)
    batches = EpochBatches(
        lookup,
        ids,
        counts,
        batch_size=config.batch_size,
        seed=config.seed,
        bucketing=False,
        captions_per_image=ids.shape[1],
    )
    step = ScstStep(
        Captioner(model, vocab, beam_size=1),
        keras.optimizers.Adam(config.scst_learning_rate),
        CiderD(reference_ids(ids[:, :, 1:], vocab.end_id)),
        config.scst_samples,
        config.scst_baseline,
        config.clip_norm,
        config.seed,
        config.scst_penalty_weight if config.attention != "mean" else 0.0,
    )
    return batches, step


def self_critical_training(
    model,
    config: TrainConfig,
    vocab: Vocabulary,
    lookup: InputLookup,
    train_records: Sequence[ImageRecord],
    val_records: list[ImageRecord],
    val_features: np.ndarray | None,
    run_dir: Path,
    previous_stage: dict,
    log: Callable[[str], None] = print,
    verbose: int = 1,
) -> None:
    """Stage 3: `config.scst_epochs` epochs of self-critical training from the best model.

    Args:
        model: the built model of the run.
        config: the run's settings.
        vocab: the run's vocabulary.
        lookup: the training inputs of stage 1 (cached features or images).
        train_records: the training images with their captions, in `lookup`'s order.
        val_records: the validation images.
        val_features: their cached features, or None.
        run_dir: the run directory; its `model.keras` is the best model so far.
        previous_stage: the final loop state of the stage before (`Trainer.state()`).
        log: where messages go.
        verbose: show progress lines.

    Raises:
        RunDirectoryError: there is no model to start from.
    """
    load_best_model(model, run_dir)
    batches, step = scst_batches_and_step(model, config, vocab, lookup, train_records)

    trainer, resumed = later_stage_trainer(
        model,
        step,
        batches,
        previous_stage,
        config,
        vocab,
        val_records,
        run_dir,
        stage=3,
        epochs=config.scst_epochs,
        checkpoint_file=SCST_CHECKPOINT_FILE,
        log=log,
        verbose=verbose,
        val_features=val_features,
        loss_keys=SCST_LOSS_KEYS,
    )
    if trainer is None:
        return
    first_epoch, last_epoch = previous_stage["epoch"], trainer.epochs
    selected = previous_stage["stateful"]["validation"]["selector"]
    log(
        f"self-critical training (stage 3) from the best model (epoch {selected['best_epoch']}, "
        f"val {config.select_metric} {selected['best']:.4g}): {config.scst_samples} samples "
        f"per image against {SCST_BASELINES[config.scst_baseline]}, CIDEr-D rewards; epochs "
        f"{first_epoch + 1}-{last_epoch} at learning rate {config.scst_learning_rate:g}"
    )
    if resumed:
        log(
            f"resuming self-critical training from epoch {trainer.epoch + 1}, batch {trainer.batch}"
        )
    trainer.fit()
