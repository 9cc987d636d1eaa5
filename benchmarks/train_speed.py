"""Training throughput: our step vs a plain per-step loop, side by side in one run.

Both train the soft-attention decoder from precomputed (B, L, D) features (random: speed
does not depend on their values) on captions of the synthetic dataset's length mix.

- plain: the step most tutorials write, compiled with `tf.function` as they do: a Python
  loop over all T steps of every batch, the annotation projection `W_a a` recomputed at
  every step, no bucketing (every batch padded to the longest caption allowed);
- plain-eager: the same step run eagerly (no `tf.function`);
- ours: `captioner.train_step.TrainStep` on `captioner.batching.EpochBatches` (bucketed),
  with float32, XLA (`jit_compile`) and mixed bfloat16 variants, and without bucketing.

Every variant runs in its own process (so that its peak memory is its own). Usage:

    python benchmarks/train_speed.py [--seconds 30] [--configs scale default]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# "scale": the reference configuration; "default": our default model's sizes
# (small CNN grid at 128 px: 8x8 cells of 128 + 2 coordinate channels).
CONFIGS = {
    "scale": {"batch": 64, "embed": 256, "units": 512, "attention": 256, "grid": 49, "depth": 1280},
    "default": {"batch": 32, "embed": 64, "units": 256, "attention": 128, "grid": 64, "depth": 130},
}
VARIANTS = ("plain-eager", "plain", "ours-unbucketed", "ours", "ours-xla", "ours-bf16")
MAX_WORDS = 20  # up to 21 steps: 20 words + <end>
NUM_IMAGES = 1024


def synthetic_captions(num_images: int, seed: int = 0) -> list[list[list[str]]]:
    """Captions (token lists) of synthetic scenes, without saving their images."""
    import numpy as np

    from captioner.synth import describe, make_scene

    rng = np.random.default_rng(seed)
    return [describe(make_scene(rng, 64)[1]) for _ in range(num_images)]


def caption_data(num_images: int):
    """(ids (N, C, T + 1), counts (N,), vocabulary size)."""
    import numpy as np

    from captioner.data import ImageRecord, encode_captions
    from captioner.vocab import Vocabulary

    captions = synthetic_captions(num_images)
    vocab = Vocabulary.build(c for image in captions for c in image)
    records = [ImageRecord(i, Path("."), "train", c) for i, c in enumerate(captions)]
    ids, counts = encode_captions(records, vocab, MAX_WORDS)
    return ids, np.asarray(counts), len(vocab)


# -- the plain step, as tutorials write it ------------------------------------------------


def plain_trainer(sizes: dict, vocab_size: int, compiled: bool):
    import keras
    import tensorflow as tf

    layers = keras.layers
    embed, units, attention = sizes["embed"], sizes["units"], sizes["attention"]
    parts = {
        "embedding": layers.Embedding(vocab_size, embed),
        "w1": layers.Dense(attention),
        "w2": layers.Dense(attention),
        "v": layers.Dense(1),
        "gate": layers.Dense(1, activation="sigmoid"),
        "cell": layers.LSTMCell(units),
        "init_h": layers.Dense(units, activation="tanh"),
        "init_c": layers.Dense(units, activation="tanh"),
        "out_h": layers.Dense(embed),
        "out_z": layers.Dense(embed),
        "out": layers.Dense(vocab_size),
    }
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def step(features, caption_in, caption_out):
        with tf.GradientTape() as tape:
            mean = tf.reduce_mean(features, axis=1)
            h, c = parts["init_h"](mean), parts["init_c"](mean)
            total, alphas = 0.0, []
            for t in range(caption_in.shape[1]):
                # the projection of the features, again at every step
                score = parts["v"](
                    tf.tanh(parts["w1"](features) + parts["w2"](h)[:, None, :])
                )  # (B, L, 1)
                alpha = tf.nn.softmax(score, axis=1)
                context = parts["gate"](h) * tf.reduce_sum(alpha * features, axis=1)
                embedded = parts["embedding"](caption_in[:, t])
                h, (_, c) = parts["cell"](tf.concat([embedded, context], -1), [h, c])
                logits = parts["out"](embedded + parts["out_h"](h) + parts["out_z"](context))
                mask = tf.cast(caption_out[:, t] > 0, tf.float32)
                total += tf.reduce_sum(loss_fn(caption_out[:, t], logits) * mask)
                alphas.append(alpha[..., 0] * mask[:, None])
            tokens = tf.reduce_sum(tf.cast(caption_out > 0, tf.float32))
            penalty = tf.reduce_mean(tf.reduce_sum((1.0 - tf.add_n(alphas)) ** 2, axis=1))
            loss = total / tokens + penalty
        variables = [v for p in parts.values() for v in p.trainable_variables]
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 5.0)
        optimizer.apply(grads, variables)
        return loss

    return tf.function(step) if compiled else step


# -- our step -------------------------------------------------------------------------------


def our_trainer(sizes: dict, vocab_size: int, jit_compile: bool):
    import keras

    from captioner.decoder import AttentionDecoder
    from captioner.distribute import make_strategy
    from captioner.train_step import TrainStep

    class FeatureCaptioner(keras.Model):
        """The decoder alone, trained from cached encoder features."""

        penalty_weight = 1.0

        def __init__(self):
            super().__init__()
            self.decoder = AttentionDecoder(
                vocab_size,
                embed_dim=sizes["embed"],
                units=sizes["units"],
                attention_dim=sizes["attention"],
            )

        def call(self, inputs, training=False):
            features, caption_in = inputs
            logits, alphas, _ = self.decoder(features, caption_in, training=training)
            return {"logits": logits, "alphas": alphas}

    import numpy as np

    model = FeatureCaptioner()
    model((np.zeros((1, sizes["grid"], sizes["depth"]), "float32"), np.zeros((1, 2), "int32")))
    optimizer = keras.optimizers.Adam(1e-3)
    return TrainStep(model, optimizer, make_strategy("default"), 5.0, jit_compile)


def run_variant(config: str, variant: str, seconds: float) -> dict:
    """Trains one variant for about `seconds` after a warm-up; returns its measurements."""
    import keras
    import numpy as np
    import tensorflow as tf

    from captioner.batching import EpochBatches, array_lookup

    sizes = CONFIGS[config]
    if variant == "ours-bf16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    ids, counts, vocab_size = caption_data(NUM_IMAGES)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(NUM_IMAGES, sizes["grid"], sizes["depth"])).astype("float32")
    bucketing = variant in ("ours", "ours-xla", "ours-bf16")
    batches = EpochBatches(
        array_lookup(features), ids, counts, batch_size=sizes["batch"], bucketing=bucketing
    )
    if variant.startswith("plain"):
        plain = plain_trainer(sizes, vocab_size, compiled=variant == "plain")

        def train(batch):
            (x, caption_in), caption_out = batch
            return float(plain(x, caption_in, caption_out))

    else:
        step = our_trainer(sizes, vocab_size, jit_compile=variant == "ours-xla")

        def train(batch):
            return step(batch)["loss"]

    # Tracing and compiling are not timed: a step of a shape not seen before is left out.
    shapes = set()
    for batch in batches.dataset(epoch=0):
        shape = tuple(batch[1].shape)
        if shape not in shapes:
            shapes.add(shape)
            train(batch)
    if variant == "plain-eager":
        seconds = min(seconds, 15.0)
    captions = steps = 0
    elapsed, epoch = 0.0, 1
    while elapsed < seconds:
        last = time.perf_counter()
        for batch in batches.dataset(epoch=epoch):  # input waits are timed too
            shape = tuple(batch[1].shape)
            loss = train(batch)
            now = time.perf_counter()
            step_seconds, last = now - last, now
            if shape not in shapes:
                shapes.add(shape)
                continue
            elapsed += step_seconds
            captions += shape[0]
            steps += 1
            if elapsed >= seconds:
                break
        epoch += 1
    return {
        "config": config,
        "variant": variant,
        "captions_per_second": captions / elapsed,
        "steps": steps,
        "seconds": elapsed,
        "final_loss": loss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "padded_share": batches.padded_share(),
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per variant")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--run", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_variant(*args.run, args.seconds)))
        return 0
    rows = []
    for config in args.configs:
        for variant in args.variants:
            command = [sys.executable, __file__, "--run", config, variant]
            command += ["--seconds", str(args.seconds)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"load average before/after: {os.getloadavg()[0]:.1f}")
    print(markdown(rows))
    return 0


def markdown(rows: list[dict]) -> str:
    lines = [
        "| sizes | step | captions/s | vs plain | padded positions | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        plain = next(r for r in rows if r["config"] == row["config"] and r["variant"] == "plain")
        speedup = row["captions_per_second"] / plain["captions_per_second"]
        lines.append(
            f"| {row['config']} | {row['variant']} | {row['captions_per_second']:.0f} | "
            f"{speedup:.2f}x | {row['padded_share']:.0%} | {row['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
