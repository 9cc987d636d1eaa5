"""Figures quoted in docs/results.md that no `captioner` command prints.

    python tools/attention_statistics.py betas RUN_DIR [--images 100] [--split test]
        the gate beta averaged over the size, colour and shape words of greedy captions of
        the synthetic dataset's first N images of a split;
    python tools/attention_statistics.py features RUN_DIR [--images 500]
        the per-channel mean and standard deviation of the encoder's grid (before the
        model's feature standardisation) over the first N training images: their ranges.

RUN_DIR is a run directory of `captioner train` on the synthetic data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from captioner.config import TrainConfig
from captioner.data.dataset import select_split
from captioner.data.image_pipeline import image_dataset
from captioner.data.karpathy import load_karpathy
from captioner.inference.captioner import Captioner
from captioner.runtime import start_tensorflow

SIZES = {"small", "large"}


def first_images(config: TrainConfig, split: str, count: int):
    data = config.data or str(Path(config.synthetic_dir) / "dataset.json")
    records = select_split(load_karpathy(data, config.images), split)[:count]
    pairs = list(image_dataset(records, config.image_size).batch(64))
    images = np.concatenate([batch.numpy() for _, batch in pairs])
    return records, images


def betas(run_dir: Path, split: str, count: int) -> None:
    config = TrainConfig.load(run_dir / "config.json")
    records, images = first_images(config, split, count)
    shapes = {o["name"] for r in records for o in r.objects or ()}
    colours = {a for r in records for o in r.objects or () for a in o["attributes"]} - SIZES
    kinds: dict[str, list[float]] = {"size": [], "colour": [], "shape": []}
    for caption in Captioner.from_run_dir(run_dir, beam_size=1).caption(images):
        for word, beta in zip(caption.words, caption.betas, strict=True):
            kind = "size" if word in SIZES else "colour" if word in colours else None
            kind = "shape" if word in shapes else kind
            if kind:
                kinds[kind].append(float(beta))
    print(f"{len(images)} {split} images, greedy captions")
    for kind, values in kinds.items():
        print(f"beta at {kind} words: {np.mean(values):.2f} ({len(values)} words)")


def features(run_dir: Path, count: int) -> None:
    config = TrainConfig.load(run_dir / "config.json")
    _, images = first_images(config, "train", count)
    model = Captioner.from_run_dir(run_dir).model
    grids = np.concatenate(
        [np.asarray(model.grid_features(images[i : i + 64])) for i in range(0, len(images), 64)]
    )  # (N, L, D), the encoder's output before standardisation
    flat = grids.reshape(-1, grids.shape[-1])
    means, stds = flat.mean(axis=0), flat.std(axis=0)
    print(f"{len(images)} training images, grid {grids.shape[1]} cells x {grids.shape[2]}")
    print(f"channel means: {means.min():.2f} to {means.max():.2f}")
    print(f"channel standard deviations: {stds.min():.2f} to {stds.max():.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("betas", "features"))
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    start_tensorflow()
    if args.what == "betas":
        betas(args.run_dir, args.split, args.images or 100)
    else:
        features(args.run_dir, args.images or 500)


if __name__ == "__main__":
    main()
