"""Deployable exports of a captioner: a TensorFlow SavedModel and a TFLite model.

The SavedModel needs nothing but TensorFlow to run: its default signature takes encoded
image files (JPEG, PNG, GIF or BMP bytes) and returns the captions, their scores and the
attention maps, decoded exactly as `captioner caption` does with the same settings. The
TFLite model holds the whole decode (encoder and search loop) from resized pixels to word ids;
`export.json` describes its inputs and outputs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from captioner.data.image_pipeline import resize_image
from captioner.inference.captioner import Captioner

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "captioner.tflite"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "export.json"
FORMATS = ("savedmodel", "tflite")

TFLITE_USAGE = (
    "Input 'images': (1, S, S, 3) uint8 RGB, the image resized to S x S with bilinear "
    "antialiased resizing (tf.image.resize(..., antialias=True), rounded). Outputs: 'tokens' "
    "(1, T) word ids (look them up in vocab.json's 'itos'; stop at <end>), 'scores' (1,), "
    "'alphas' (1, T, L) with L = gh * gw cells in row-major order, 'betas' (1, T)."
)


def _decode_image(data: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes -> (size, size, 3) uint8, decoded as Pillow decodes them."""
    # Pillow decodes JPEG with libjpeg's accurate integer DCT; TensorFlow's default is the
    # fast one, which changes pixels (and can change captions).
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape((None, None, 3))
    return resize_image(image, size)


def caption_tensors(captioner: Captioner, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
    """Search tokens (B, T) -> words (B, T) ("" after the caption), caption (B,), length (B,).

    A caption is its words up to `<end>`, as `Vocabulary.decode` reads them.
    """
    vocab = captioner.vocab
    ended = tf.cumsum(tf.cast(tokens == vocab.end_id, tf.int32), axis=1) > 0
    is_word = ~ended & (tokens != vocab.pad_id) & (tokens != vocab.start_id)  # (B, T)
    words = tf.where(is_word, tf.gather(tf.constant(vocab.itos), tokens), "")
    captions = tf.strings.reduce_join(tf.ragged.boolean_mask(words, is_word), axis=1, separator=" ")
    return {
        "words": words,
        "caption": captions,
        "length": tf.reduce_sum(tf.cast(is_word, "int32"), 1),
    }


def _serving_functions(captioner: Captioner):
    size = captioner.image_size
    gh, gw = captioner.grid_size

    def serve(images):
        pixels = tf.map_fn(
            lambda data: _decode_image(data, size),
            images,
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8),
        )
        out = captioner.generate_graph(pixels)
        text = caption_tensors(captioner, out["tokens"])
        # Attention of the caption's words only (zeros from <end> on), on the encoder's grid.
        is_word = tf.sequence_mask(text["length"], tf.shape(out["tokens"])[1])
        alphas = tf.where(is_word[..., None], out["alphas"], 0.0)
        return {
            "caption": text["caption"],
            "words": text["words"],
            "length": text["length"],
            "score": out["scores"],
            "alphas": tf.reshape(alphas, (tf.shape(alphas)[0], -1, gh, gw)),
            "betas": tf.where(is_word, out["betas"], 0.0),
        }

    def pixels(images):
        out = captioner.generate_graph(images)
        return {key: out[key] for key in ("tokens", "scores", "alphas", "betas")}

    return serve, pixels


def export_saved_model(captioner: Captioner, path: str | Path) -> Path:
    """Writes a SavedModel with two signatures.

    - `serving_default`: `images`, a (B,) string tensor of encoded image files -> `caption`
      (B,) string, `words` (B, T) string ("" after the caption), `length` (B,) int32,
      `score` (B,) float32 (sum of log-probabilities), `alphas` (B, T, gh, gw) float32 and
      `betas` (B, T) float32, zero after the caption's words.
    - `pixels`: `images` (B, S, S, 3) uint8, already resized -> the raw search output.
    """
    path = Path(path)
    serve, pixels = _serving_functions(captioner)
    size = captioner.image_size
    archive = keras.export.ExportArchive()
    archive.track(captioner.model)
    archive.add_endpoint("serve", serve, [tf.TensorSpec((None,), tf.string, name="images")])
    archive.add_endpoint(
        "pixels", pixels, [tf.TensorSpec((None, size, size, 3), tf.uint8, name="images")]
    )
    if path.exists():
        shutil.rmtree(path)
    archive.write_out(str(path), verbose=False)
    return path


def export_tflite(captioner: Captioner, path: str | Path) -> Path:
    """Writes a TFLite model of the whole decode for one resized image (see `TFLITE_USAGE`)."""
    path = Path(path)
    _, pixels = _serving_functions(captioner)
    size = captioner.image_size
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(captioner.model)
        archive.add_endpoint(
            "pixels", pixels, [tf.TensorSpec((1, size, size, 3), tf.uint8, name="images")]
        )
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["pixels"])
        path.write_bytes(converter.convert())
    return path


def export_model(
    captioner: Captioner, out_dir: str | Path, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Writes the chosen exports to `out_dir`, with the vocabulary and `export.json`.

    Returns:
        the paths written, exports first.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {FORMATS}")
    if captioner.members:
        raise ValueError("an ensemble cannot be exported; export one of its models")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "savedmodel" in formats:
        written.append(export_saved_model(captioner, out_dir / SAVED_MODEL_DIR))
    if "tflite" in formats:
        written.append(export_tflite(captioner, out_dir / TFLITE_FILE))
    captioner.vocab.save(out_dir / VOCAB_FILE)
    metadata = {
        "image_size": captioner.image_size,
        "grid_size": list(captioner.grid_size),
        **captioner.settings,
        "vocab": VOCAB_FILE,
        "saved_model": SAVED_MODEL_DIR if "savedmodel" in formats else None,
        "tflite": TFLITE_FILE if "tflite" in formats else None,
        "tflite_usage": TFLITE_USAGE,
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return [*written, out_dir / VOCAB_FILE, out_dir / METADATA_FILE]
