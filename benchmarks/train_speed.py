"""Training throughput: our step vs a plain per-step loop, side by side in one run.

Both train the soft-attention decoder from precomputed (B, L, D) features (random: speed
does not depend on their values) on captions of the synthetic dataset's length mix.

- plain: the step most tutorials write, compiled with `tf.function` as they do: a Python
  loop over all T steps of every batch, the annotation projection `W_a a` recomputed at
  every step, no bucketing (every batch padded to the longest caption allowed);
- plain-eager: the same step run eagerly (no `tf.function`);
- ours: `captioner.training.train_step.TrainStep` on `captioner.data.batching.EpochBatches`
  (bucketed), with float32, XLA (`jit_compile`) and mixed bfloat16 variants, and without bucketing.

The variants' timed steps are interleaved in one process, one step of each in turn, so
that they share whatever else loads the machine; each variant's peak memory is measured
in a process of its own. Usage:

    python benchmarks/train_speed.py [--rounds 12] [--configs scale small_cnn] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import InterleavedSteps  # noqa: E402  (benchmarks/, the script's folder)

# "scale": the reference configuration; "small_cnn": the decoder's default sizes on
# the small CNN's 8x8x130 grid (the default encoder until EfficientNet-Lite0)
# (small CNN grid at 128 px: 8x8 cells of 128 + 2 coordinate channels).
CONFIGS = {
    "scale": {"batch": 64, "embed": 256, "units": 512, "attention": 256, "grid": 49, "depth": 1280},
    "small_cnn": {
        "batch": 32,
        "embed": 64,
        "units": 256,
        "attention": 128,
        "grid": 64,
        "depth": 130,
    },
}
VARIANTS = ("plain-eager", "plain", "ours-unbucketed", "ours", "ours-xla", "ours-bf16")
MAX_WORDS = 20  # up to 21 steps: 20 words + <end>
NUM_IMAGES = 1024
EAGER_EVERY = 3  # the eager step is timed every third round only


def synthetic_captions(num_images: int, seed: int = 0) -> list[list[list[str]]]:
    """Captions (token lists) of synthetic scenes, without saving their images."""
    import numpy as np

    from captioner.data.synthetic import describe, make_scene

    rng = np.random.default_rng(seed)
    return [describe(make_scene(rng, 64)[1]) for _ in range(num_images)]


def caption_data(num_images: int):
    """(ids (N, C, T + 1), counts (N,), vocabulary size)."""
    import numpy as np

    from captioner.data.batching import encode_captions
    from captioner.data.dataset import ImageRecord
    from captioner.data.vocabulary import Vocabulary

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

    from captioner.models.decoder import AttentionDecoder
    from captioner.training.distribute import make_strategy
    from captioner.training.train_step import TrainStep

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


class Variant(InterleavedSteps):
    """One way of training, with its own batches (an endless stream over epochs)."""

    def __init__(self, name: str, sizes: dict, data: tuple, features):
        from captioner.data.batching import EpochBatches, array_lookup
        from captioner.training.setup import dtype_policy

        ids, counts, vocab_size = data
        self.name = name
        batches = EpochBatches(
            array_lookup(features),
            ids,
            counts,
            batch_size=sizes["batch"],
            bucketing=name in ("ours", "ours-xla", "ours-bf16"),
        )
        policy = "mixed_bfloat16" if name == "ours-bf16" else "float32"
        with dtype_policy(policy):  # layers keep the policy they were built with
            if name.startswith("plain"):
                plain = plain_trainer(sizes, vocab_size, compiled=name == "plain")

                def train(batch):
                    (features, caption_in), targets = batch
                    return float(plain(features, caption_in, targets))  # waits for the step
            else:
                train = our_trainer(sizes, vocab_size, jit_compile=name == "ours-xla")
        # The wait for each batch is timed with its step: the plain steps' input is part of it.
        super().__init__(batches, train, include_batch_wait=True)


def measure(config: str, variants: list[str], rounds: int) -> list[dict]:
    """Captions/s of every variant, their steps interleaved so that they share the load."""
    import numpy as np

    sizes = CONFIGS[config]
    data = caption_data(NUM_IMAGES)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(NUM_IMAGES, sizes["grid"], sizes["depth"])).astype("float32")
    runs = [Variant(name, sizes, data, features) for name in variants]
    for run in runs:
        run.warm_up()
    for index in range(rounds):
        for run in runs:
            if run.name == "plain-eager" and index % EAGER_EVERY:
                continue  # slow: fewer of its steps
            run.timed_step()
    return [
        {
            "config": config,
            "variant": run.name,
            "captions_per_second": run.captions_per_second,
            "steps": run.steps,
            "padded_share": run.batches.padded_share(),
        }
        for run in runs
    ]


def peak_memory(config: str, variant: str) -> dict:
    """Peak resident memory of a process that warms a variant up and trains 3 steps."""
    import numpy as np

    sizes = CONFIGS[config]
    features = np.random.default_rng(0).normal(size=(NUM_IMAGES, sizes["grid"], sizes["depth"]))
    run = Variant(variant, sizes, caption_data(NUM_IMAGES), features.astype("float32"))
    run.warm_up()
    for _ in range(3):
        run.timed_step()
    return {"peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike `ru_maxrss` it does not include
    the parent's memory at the fork that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    parser.add_argument(
        "--memory-of", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_of:
        print(json.dumps(peak_memory(*args.memory_of)))
        return 0
    rows = []
    for config in args.configs:
        loads = [os.getloadavg()[0]]
        if args.memory_only:
            results = [{"config": config, "variant": v} for v in args.variants]
        else:
            results = measure(config, args.variants, args.rounds)
        loads.append(os.getloadavg()[0])
        for row in results:
            row["load_average"] = f"{loads[0]:.1f}-{loads[1]:.1f}"
            if not args.no_memory:
                command = [sys.executable, __file__, "--memory-of", config, row["variant"]]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(rows) if args.memory_only else markdown(rows))
    return 0


def markdown(rows: list[dict]) -> str:
    lines = [
        "| sizes | step | captions/s | vs plain | timed steps | padded positions "
        "| peak RSS (MiB) | load average |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        plain = [r for r in rows if r["config"] == row["config"] and r["variant"] == "plain"]
        speedup = (
            f"{row['captions_per_second'] / plain[0]['captions_per_second']:.2f}x" if plain else "-"
        )
        memory = f"{row['peak_rss_mib']:.0f}" if "peak_rss_mib" in row else "-"
        lines.append(
            f"| {row['config']} | {row['variant']} | {row['captions_per_second']:.1f} | "
            f"{speedup} | {row['steps']} | {row['padded_share']:.0%} | {memory} | "
            f"{row['load_average']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
