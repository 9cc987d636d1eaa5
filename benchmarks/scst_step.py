"""The self-critical step on real photos, with and without cutting its samples' padding.

Times `ScstStep` (a step of `captioner train`'s self-critical stage: draw five captions per
image, score them with CIDEr-D, teacher-force them forward and back) on a trained photo
run's model and the cached grid features of its training images, in two variants:

- "cut": the update teacher-forces the samples up to the batch's longest one
  (`padding_cut`, what `captioner train` runs);
- "whole length": it runs over all `max_length` positions, as before the cut.

The variants share the model and take turns, one step each on the same batch; a step that
compiles an update (for a length not seen before) is not timed. "positions" is the mean
length the updates ran over, "s per epoch" the mean step times the run's batches per
epoch. Run it in the directory the run was trained in (its config names the data and the
feature cache relative to it), on a finished run whose features are cached:

    python benchmarks/scst_step.py runs/flickr8k [--steps 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("cut", "whole length")


def scst_steps(run_dir: Path):
    """The run's model with its cached training features, and a self-critical step per
    variant, built as `captioner train` builds its own; returns (batches, {variant: step})."""
    import keras

    from captioner.config import TrainConfig
    from captioner.data.dataset import select_split
    from captioner.data.formats import load_dataset
    from captioner.data.vocabulary import Vocabulary
    from captioner.inference.captioner import CONFIG_FILE, MODEL_FILE, VOCAB_FILE
    from captioner.training.inputs import feature_inputs
    from captioner.training.scst import scst_batches_and_step
    from captioner.training.setup import build_model

    config = TrainConfig.load(run_dir / CONFIG_FILE)
    vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    records, _ = load_dataset(config.data, config.images)
    train = [r for r in select_split(records, "train") if r.captions]
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, len(vocab))
    lookup, train, _ = feature_inputs(model, config, train, [], print, verbose=0)
    model.load_weights(run_dir / MODEL_FILE)
    steps = {}
    for name in VARIANTS:
        batches, steps[name] = scst_batches_and_step(model, config, vocab, lookup, train)
    return batches, steps


def run_step(name: str, step, batch, lengths: list) -> tuple[float, bool]:
    """(seconds, whether an update was compiled) of one step of variant `name`; the length
    its update ran over goes to `lengths`."""
    from captioner.training import scst

    cut = scst.padding_cut

    def cut_or_not(tokens):
        kept = cut(tokens) if name == "cut" else tokens
        lengths.append(kept.shape[1])
        return kept

    compiled = len(step._updates)
    with mock.patch.object(scst, "padding_cut", cut_or_not):
        started = time.perf_counter()
        step(batch)
        seconds = time.perf_counter() - started
    return seconds, len(step._updates) > compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=24, help="steps of each variant")
    args = parser.parse_args()

    from captioner.runtime import repeatable_steps

    batches, steps = scst_steps(args.run_dir)
    seconds = {name: [] for name in VARIANTS}
    lengths = {name: [] for name in VARIANTS}
    with repeatable_steps():
        stream = iter(batches.dataset(epoch=0))
        for _ in range(args.steps):
            batch = next(stream)
            for name in VARIANTS:
                took, compiled = run_step(name, steps[name], batch, lengths[name])
                if not compiled:
                    seconds[name].append(took)
    samples = steps["cut"].samples
    print(
        f"{args.run_dir}: {args.steps} batches of {batches.batch_size} images, {samples} "
        f"samples each; steps that compiled an update not timed"
    )
    print("| update over | timed steps | positions | s per step | captions/s | s per epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in VARIANTS:
        timed = len(seconds[name])
        positions = sum(lengths[name]) / len(lengths[name])
        if not timed:  # every step compiled an update: run more steps
            print(f"| {name} | 0 | {positions:.1f} | – | – | – |")
            continue
        mean = sum(seconds[name]) / timed
        print(
            f"| {name} | {timed} | {positions:.1f} | {mean:.2f} | "
            f"{batches.batch_size * samples / mean:.1f} | {mean * batches.steps_per_epoch:.0f} |"
        )


if __name__ == "__main__":
    main()
