"""train -> evaluate on tiny datasets in the formats people download (not Karpathy JSON)."""

import json

import keras
import numpy as np
from PIL import Image

from captioner.cli import main
from captioner.config import DATA_DEFAULTS, DECODING_DEFAULTS, DECODING_OPTIONS
from tests.test_cli import TINY_MODEL

CAPTIONS = ["a dog runs on the grass .", "a brown dog is running", "the dog plays outside"]


def write_photos(folder, names):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, format="JPEG")


def write_flickr8k(root, names):
    text = root / "Flickr8k_text"
    text.mkdir(parents=True)
    lines = [f"{n}#{k}\t{c}" for n in names for k, c in enumerate(CAPTIONS)]
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split, chosen in (("train", names[:6]), ("dev", names[6:8]), ("test", names[8:])):
        (text / f"Flickr_8k.{split}Images.txt").write_text("\n".join(chosen) + "\n")
    return text / "Flickr8k.token.txt"


def test_flickr8k_files_train_and_evaluate_into_runs_flickr8k(tmp_path, monkeypatch, capsys):
    names = [f"{1000 + i}_abc.jpg" for i in range(10)]
    write_photos(tmp_path / "Flicker8k_Dataset", names)
    token_file = write_flickr8k(tmp_path, names)
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", str(token_file), "--images", "Flicker8k_Dataset", *TINY_MODEL]
    assert main([*args, "--feature-cache", "", "--no-tensorboard", "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "flickr8k"  # named after the data
    assert (run_dir / "model.keras").is_file()
    printed = capsys.readouterr().out
    assert "6 training images, 2 validation" in printed
    config = json.loads((run_dir / "config.json").read_text())
    assert config["out"] == "runs/flickr8k" and config["images"] == "Flicker8k_Dataset"
    # the real-photo recipe: top-down decoder, then self-critical epochs
    photos = DATA_DEFAULTS["photos"]
    assert (config["data_kind"], config["decoder"], config["scst_epochs"]) == (
        "photos",
        "topdown",
        photos["scst_epochs"],
    )
    assert photos["scst_epochs"] > 0
    assert "(SCST)" in printed

    # evaluate reads the same files again from the run's config, decoding as chosen for photos
    assert main(["evaluate", "--model", str(run_dir), "--coco-metrics", "none"]) == 0
    metrics = json.loads((run_dir / "test" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["split"] == "test"
    decoding = tuple(metrics[name] for name in DECODING_OPTIONS)
    assert decoding == DECODING_DEFAULTS["photos"]["evaluate"]
    predictions = json.loads((run_dir / "test" / "predictions.json").read_text())
    assert all(p["caption"] and "<unk>" not in p["caption"] for p in predictions)

    # the run is seeded: the same command again gives the same curves and the same model
    again = ["--out", "again", "--feature-cache", "", "--no-tensorboard", "--quiet"]
    assert main([*args, *again]) == 0
    assert _scores(tmp_path / "again") == _scores(run_dir)
    first, second = (
        keras.saving.load_model(d / "model.keras") for d in (run_dir, tmp_path / "again")
    )
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _scores(run_dir):
    """A run's per-epoch losses and validation scores (not its timings)."""
    history = json.loads((run_dir / "history.json").read_text())
    timings = ("train_seconds", "captions_per_second")
    return [{k: v for k, v in row.items() if k not in timings} for row in history]


def test_captions_csv_gets_a_seeded_split_and_says_so(tmp_path, monkeypatch, capsys):
    names = [f"photo{i}.jpg" for i in range(10)]
    write_photos(tmp_path / "Images", names)
    rows = ["image,caption"] + [f'{n},"{c}, really"' for n in names for c in CAPTIONS]
    (tmp_path / "captions.txt").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", "captions.txt", "--out", "run", *TINY_MODEL]
    assert main([*args, "--feature-cache", "", "--no-tensorboard", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "made a seeded split (seed 0): 8 train / 1 val / 1 test" in printed
    assert (tmp_path / "run" / "model.keras").is_file()
