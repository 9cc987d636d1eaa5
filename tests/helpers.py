"""Small datasets and models shared by the tests."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_karpathy(root: Path, with_filepath: bool = True, size: int = 40) -> Path:
    """A 6-image Karpathy file (train, restval, val, test) with its images."""
    rng = np.random.default_rng(0)
    splits = ["train", "train", "restval", "val", "test", "test"]
    images = []
    for i, split in enumerate(splits):
        folder = root / ("imgs" if with_filepath else "")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"im{i}.png"
        pixels = rng.integers(0, 255, (size + i, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        entry = {
            "filename": name,
            "imgid": i,
            "split": split,
            "sentences": [
                {"tokens": ["a", "dog", "runs"], "raw": "A dog runs."},
                {"tokens": [], "raw": "The dog, running!"},
            ],
        }
        if with_filepath:
            entry["filepath"] = "imgs"
        images.append(entry)
    path = root / "dataset.json"
    path.write_text(json.dumps({"dataset": "test", "images": images}))
    return path
