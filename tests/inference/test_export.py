"""Exports give the captions of the in-process model: SavedModel (bytes in) and TFLite."""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from captioner.data.vocabulary import Vocabulary
from captioner.inference.caption_files import caption_files
from captioner.inference.captioner import Captioner
from captioner.inference.export import METADATA_FILE, SAVED_MODEL_DIR, TFLITE_FILE, export_model
from tests.helpers import TINY_WORDS, tiny_model

WORDS = TINY_WORDS


@pytest.fixture(scope="module", params=[0, 2], ids=["repeats", "no_repeat_bigram"])
def captioner(request):
    """Beam 3, with and without the no-repeat rule that photo models decode with."""
    return Captioner(
        tiny_model(WORDS), Vocabulary(WORDS), beam_size=3, no_repeat_ngram=request.param
    )


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """A JPEG, a PNG and a non-square JPEG of smooth random colours."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for name, shape in (("a.jpg", (48, 48)), ("b.png", (40, 40)), ("c.jpg", (30, 70))):
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(shape[::-1], Image.Resampling.BILINEAR)
        image.save(folder / name, quality=90)
        paths.append(folder / name)
    return paths


@pytest.mark.slow  # the default suite checks the SavedModel through the CLI (test_cli.py)
def test_saved_model_captions_encoded_images_like_the_model(captioner, image_files, tmp_path):
    written = export_model(captioner, tmp_path, formats=("savedmodel",))
    assert tmp_path / SAVED_MODEL_DIR in written
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert metadata["beam_size"] == 3 and metadata["grid_size"] == [2, 2]
    expected = [r.caption for r in caption_files(captioner, image_files)]

    loaded = tf.saved_model.load(str(tmp_path / SAVED_MODEL_DIR))
    data = tf.constant([p.read_bytes() for p in image_files])
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=data).items()}
    for b, caption in enumerate(expected):
        assert out["caption"][b].decode() == caption.text
        n = out["length"][b]
        assert n == len(caption.words)
        assert [w.decode() for w in out["words"][b, :n]] == caption.words
        np.testing.assert_allclose(out["score"][b], caption.score, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["alphas"][b, :n], caption.alphas, atol=1e-5)
        np.testing.assert_allclose(out["betas"][b, :n], caption.betas, atol=1e-5)
        assert not out["alphas"][b, n:].any()


def test_tflite_gives_the_same_tokens_as_the_model(captioner, tmp_path):
    export_model(captioner, tmp_path, formats=("tflite",))
    images = np.random.default_rng(2).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    expected = captioner.generate(images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's move to LiteRT
        interpreter = tf.lite.Interpreter(model_path=str(tmp_path / TFLITE_FILE))
    run = interpreter.get_signature_runner("pixels")
    for b in range(len(images)):
        out = run(images=images[b : b + 1])
        np.testing.assert_array_equal(out["tokens"][0], expected["tokens"][b])
        np.testing.assert_allclose(out["scores"][0], expected["scores"][b], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["alphas"][0], expected["alphas"][b], atol=1e-4)


def test_unknown_export_format_is_refused(captioner, tmp_path):
    with pytest.raises(ValueError, match="unknown export formats"):
        export_model(captioner, tmp_path, formats=("onnx",))
