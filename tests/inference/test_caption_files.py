"""caption_files: batches read ahead, results in input order, unreadable files named."""

import numpy as np
from PIL import Image

from captioner.data.image_pipeline import resize_image
from captioner.inference.caption_files import caption_files
from captioner.inference.captioner import Caption


class RecordingCaptioner:
    """Captions an image with its mean pixel value, and keeps the batches it was given."""

    image_size = 12

    def __init__(self):
        self.batches = []

    def caption(self, images):
        self.batches.append(images.copy())
        return [
            Caption([str(int(image.mean()))], 0.0, np.ones((1, 2, 2)) / 4, np.ones(1))
            for image in images
        ]


def test_results_come_in_order_across_batches_with_errors(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"im{i}.png"
        if i in (2, 5):
            path.write_text("not an image")
        else:
            size = (20 + i, 15) if i % 2 else (15, 15)
            Image.new("RGB", size, (10 * i, 10 * i, 10 * i)).save(path)
        paths.append(path)
    captioner = RecordingCaptioner()
    results = list(caption_files(captioner, paths, batch_size=3))
    assert [r.path for r in results] == paths
    assert [i for i, r in enumerate(results) if r.error is not None] == [2, 5]
    assert "im2.png" in results[2].error and "im5.png" in results[5].error
    assert results[2].caption is None and results[5].caption is None
    readable = [i for i in range(7) if i not in (2, 5)]
    assert [results[i].caption.text for i in readable] == [str(10 * i) for i in readable]
    assert [len(b) for b in captioner.batches] == [2, 2, 1]
    expected = [resize_image(np.asarray(Image.open(paths[i])), 12).numpy() for i in readable]
    np.testing.assert_array_equal(np.concatenate(captioner.batches), np.stack(expected))


def test_closing_the_results_early_stops_captioning(tmp_path):
    paths = []
    for i in range(9):
        paths.append(tmp_path / f"im{i}.png")
        Image.new("RGB", (8, 8), (i, i, i)).save(paths[-1])
    captioner = RecordingCaptioner()
    results = caption_files(captioner, paths, batch_size=3)
    first = next(results)
    results.close()
    assert first.caption.text == "0" and len(captioner.batches) == 1
