"""The tf.data pipelines read images with the captioning loader and skip unreadable ones."""

import json

import numpy as np
from PIL import Image

from captioner.cli import main
from captioner.data.batching import EpochBatches, encode_captions
from captioner.data.dataset import ImageRecord
from captioner.data.image_pipeline import image_dataset, resize_image
from captioner.data.images import load_image
from captioner.data.karpathy import load_karpathy
from captioner.data.vocabulary import Vocabulary
from captioner.training.inputs import image_inputs
from tests.helpers import write_karpathy
from tests.image_corpus import write_valid_images


def test_pipeline_images_equal_the_captioning_loader(tmp_path):
    paths = list(write_valid_images(tmp_path))  # 16-bit, CMYK, EXIF, alpha, animations, ...
    records = [ImageRecord(i, p, "test", [["x"]]) for i, p in enumerate(paths)]
    pairs = list(image_dataset(records, 24).as_numpy_iterator())
    assert [int(index) for index, _ in pairs] == list(range(len(paths)))
    for (_, image), path in zip(pairs, paths):
        np.testing.assert_array_equal(image, resize_image(load_image(path), 24).numpy())


def test_unreadable_images_are_left_out_and_reported_once(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html></html>")
    records = [ImageRecord(i, p, "train", [["x"]]) for i, p in enumerate([bad, good, bad])]
    messages = []
    ds = image_dataset(records, 8, on_error=messages.append)
    assert [int(i) for i, _ in ds.as_numpy_iterator()] == [1]
    assert messages == [f"{bad}: not an image file (it is an HTML page) (skipped)"]


def test_training_batches_keep_captions_with_their_images(tmp_path, capsys):
    # Image k is filled with the value 10 * k and captioned with the word "wk".
    records = []
    for k in range(6):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(path)
        records.append(ImageRecord(k, path, "train", [[f"w{k}"]]))
    records[2].path.write_bytes(b"")  # unreadable: its caption must not shift onto others
    records[4].path.write_bytes(b"\x89PNG\r\n\x1a\n")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    lookup, readable = image_inputs(records, 8)
    assert [r.image_id for r in readable] == [0, 1, 3, 5]  # decoded once into memory
    ids, counts = encode_captions(readable, vocab, max_length=3)
    batches = EpochBatches(lookup, ids, counts, batch_size=4, seed=0)
    assert batches.steps_per_epoch == 1
    for record in records:
        record.path.unlink()  # memory holds them
    for epoch in range(2):
        seen = {}
        for (images, caption_in), _ in batches.dataset(epoch).as_numpy_iterator():
            for image, caption in zip(images, caption_in):
                seen[int(image[0, 0, 0]) // 10] = vocab.decode(caption)
        assert seen == {k: [f"w{k}"] for k in (0, 1, 3, 5)}, epoch
    warnings = capsys.readouterr().err.splitlines()
    assert sorted(warnings) == [
        f"warning: {records[2].path}: empty file (0 bytes) (skipped)",
        f"warning: {records[4].path}: cannot decode image (a damaged PNG file) (skipped)",
    ]


def test_evaluate_names_unreadable_images_and_exits_1(untrained_run, tmp_path, capsys):
    path = write_karpathy(tmp_path, size=32)
    broken = tmp_path / "imgs" / "im5.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated test image
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(untrained_run), "--data", str(path), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"captioner: {broken}: cannot decode image" in err and "Traceback" not in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 1 and metrics["num_unreadable_images"] == 1
    assert len(load_karpathy(path)) == 6  # the dataset itself is fine


def test_resize_images_equals_resize_image_for_every_size(monkeypatch):
    import captioner.data.image_pipeline as data

    rng = np.random.default_rng(0)
    shapes = [(30, 40), (16, 16), (30, 40), (7, 50), (30, 40), (16, 16)]
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]
    # Two 30 x 40 images per call at most: the three of that size need two calls.
    monkeypatch.setattr(data, "RESIZE_CALL_PIXELS", 2 * 30 * 40)
    resized = data.resize_images(images, 24)
    assert resized.shape == (len(images), 24, 24, 3) and resized.dtype == np.uint8
    for got, image in zip(resized, images, strict=True):
        np.testing.assert_array_equal(got, resize_image(image, 24).numpy())
    assert data.resize_images([], 24).shape == (0, 24, 24, 3)
