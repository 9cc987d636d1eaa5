"""The compiled teacher-forcing training step, the same code on one or many replicas."""

from __future__ import annotations

import keras
import tensorflow as tf

from captioner.models.captioning_model import caption_loss_sums


class TrainStep:
    """One optimisation step on a global batch `((inputs, caption_in), caption_out)`.

    `inputs` are images (B, S, S, 3) or cached grid features (B, L, D); captions are (B, T)
    or (B, C, T) for C captions per image.

    The loss is normalised by the global batch's token and caption counts (all-reduced
    across replicas), gradients are summed across replicas and clipped by their global
    norm after that sum, so a step split over N replicas equals the one-device step on
    the same global batch. The model may take images or cached features: the step only
    calls `model(inputs, training=True)` and reads its "logits" and "alphas".

    Args:
        model: a built captioning model (created in `strategy.scope()`).
        optimizer: a Keras optimiser without its own clipping (a `LossScaleOptimizer`
            for float16).
        strategy: the `tf.distribute` strategy the model was created under.
        clip_norm: the global gradient-norm limit (0: none).
        jit_compile: compile the forward and backward pass with XLA.
    """

    def __init__(self, model, optimizer, strategy, clip_norm=5.0, jit_compile=False):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.clip_norm = float(clip_norm)
        self.penalty_weight = float(getattr(model, "penalty_weight", 0.0))
        with strategy.scope():  # its variables must exist before the compiled step runs
            optimizer.build(model.trainable_variables)
        self._gradients = tf.function(self._compute_gradients, jit_compile=bool(jit_compile))
        self._steps = {}  # one compiled step per batch shape (bucketed caption lengths)

    def __call__(self, batch) -> dict[str, float]:
        """Runs one step on a batch from `distribute`; returns the batch's mean losses."""
        shape = tuple(tuple(t.shape) for t in tf.nest.flatten(batch, expand_composites=True))
        if shape not in self._steps:
            self._steps[shape] = tf.function(self._distributed_step)
        return {k: float(v) for k, v in self._steps[shape](batch).items()}

    def distribute(self, dataset: tf.data.Dataset):
        """The dataset's global batches split across the replicas."""
        if self.strategy.num_replicas_in_sync == 1:
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def _compute_gradients(self, inputs, targets, tokens, captions):
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            cross_entropy, _, penalty, _ = caption_loss_sums(
                targets, outputs["logits"], outputs["alphas"]
            )
            # this replica's share of the global means: the shares sum to the global loss
            loss = cross_entropy / tokens + self.penalty_weight * penalty / captions
            if self.model.losses:
                replicas = self.strategy.num_replicas_in_sync
                loss += tf.add_n([tf.cast(x, "float32") for x in self.model.losses]) / replicas
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        return gradients, loss, cross_entropy / tokens, penalty / captions

    def _replica_step(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        replicas = self.strategy.num_replicas_in_sync
        real = tf.not_equal(targets, 0)  # (B, T), or (B, C, T) with C captions per image
        local_counts = tf.stack(
            [
                tf.reduce_sum(tf.cast(real, "float32")),
                tf.reduce_sum(tf.cast(tf.reduce_any(real, axis=-1), "float32")),  # captions
            ]
        )
        counts = context.all_reduce(tf.distribute.ReduceOp.SUM, local_counts)
        gradients, loss, cross_entropy, penalty = self._gradients(
            inputs, targets, tf.maximum(counts[0], 1.0), tf.maximum(counts[1], 1.0)
        )
        gradients = [tf.convert_to_tensor(g) for g in gradients]
        if replicas > 1:
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        if self.clip_norm > 0:
            # the scaled gradients of mixed float16 are clipped at the scaled limit
            limit = self.clip_norm * tf.cast(self._loss_scale(), "float32")
            gradients, _ = tf.clip_by_global_norm(gradients, limit)
        if replicas > 1:
            # the optimiser sums across replicas again
            gradients = [g / replicas for g in gradients]
        self.optimizer.apply(gradients, self.model.trainable_variables)
        return {"loss": loss, "xent": cross_entropy, "penalty": penalty}

    def _loss_scale(self):
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.dynamic_scale
        return 1.0

    def _distributed_step(self, batch):
        inputs, targets = batch
        shares = self.strategy.run(self._replica_step, args=(inputs, targets))
        return {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in shares.items()
        }
