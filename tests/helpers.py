"""Small datasets and models shared by the tests."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = ROOT / "tests" / "fixtures"


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


TINY_WORDS = ["a", "red", "blue", "circle", "square", "left", "of", "the", "small"]


def tiny_model(words=TINY_WORDS, **options):
    """A built, untrained captioning model for 32 px images and `words` (+ 4 specials);
    `options`: more CaptioningModel arguments (decoder, coverage, ...)."""
    from captioner.models.captioning_model import CaptioningModel

    model = CaptioningModel(
        len(words) + 4,
        image_size=32,
        embed_dim=8,
        units=16,
        attention_dim=8,
        max_length=6,
        **options,
    )
    model.build()
    return model


def write_untrained_run(run_dir: Path, image_size: int = 32) -> Path:
    """A run directory (config, vocabulary, model) holding a tiny untrained model."""
    from captioner.config import TrainConfig
    from captioner.data.vocabulary import Vocabulary
    from captioner.models.captioning_model import CaptioningModel

    run_dir.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary(["a", "red", "blue", "circle", "square"])
    model = CaptioningModel(
        len(vocab), image_size=image_size, embed_dim=8, units=16, attention_dim=8, max_length=6
    )
    model.build()
    model.save(run_dir / "model.keras")
    vocab.save(run_dir / "vocab.json")
    settings = {"embed_dim": 8, "units": 16, "attention_dim": 8, "max_length": 6}
    TrainConfig(encoder="small_cnn", image_size=image_size, **settings).save(
        run_dir / "config.json"
    )
    return run_dir
