"""Captioning with a trained model: compiled decoding and per-image results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.config import TrainConfig
from captioner.search import greedy_search
from captioner.vocab import Vocabulary

MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.json"
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class Caption:
    """One generated caption with the attention behind every word."""

    words: list[str]
    score: float
    alphas: np.ndarray  # (len(words), gh, gw)
    betas: np.ndarray  # (len(words),)

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Captioner:
    """Generates captions for batches of images with a `CaptioningModel`.

    Args:
        model: a built `CaptioningModel`.
        vocab: its vocabulary.
        max_length: the most words to generate (defaults to the model's).
    """

    def __init__(self, model: keras.Model, vocab: Vocabulary, max_length: int | None = None):
        if len(vocab) != model.vocab_size:
            raise ValueError(
                f"vocabulary has {len(vocab)} words but the model was built for {model.vocab_size}"
            )
        self.model = model
        self.vocab = vocab
        self.max_length = max_length or model.max_length
        self.image_size = model.image_size
        self.grid_size = model.grid_size
        signature = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.uint8)
        self._generate = tf.function(self._generate_graph, input_signature=[signature])
        self._generate_from_features = tf.function(
            lambda features: self._search(model.annotate(features))
        )

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> Captioner:
        """Loads the model and vocabulary that `captioner train` wrote to `run_dir`."""
        run_dir = Path(run_dir)
        for name in (MODEL_FILE, VOCAB_FILE, CONFIG_FILE):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"{run_dir}: not a run directory (no {name})")
        TrainConfig.load(run_dir / CONFIG_FILE)  # refuses runs of an incompatible version
        import captioner.model  # noqa: F401  (registers the custom layers)

        model = keras.saving.load_model(run_dir / MODEL_FILE, compile=False, safe_mode=True)
        return cls(model, Vocabulary.load(run_dir / VOCAB_FILE))

    def _generate_graph(self, images):
        annotations, _ = self.model.encode(images)
        return self._search(annotations)

    def _search(self, annotations):
        decoder = self.model.decoder
        return greedy_search(
            lambda tokens, state: decoder.step(tokens, state),
            decoder.initial_state(annotations),
            start_id=self.vocab.start_id,
            end_id=self.vocab.end_id,
            max_length=self.max_length + 1,  # room for <end>
            banned_ids=(self.vocab.pad_id, self.vocab.start_id),
            pad_id=self.vocab.pad_id,
        )

    def generate(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw search output for (B, S, S, 3) uint8 images, as NumPy arrays."""
        return {k: v.numpy() for k, v in self._generate(tf.convert_to_tensor(images)).items()}

    def caption(self, images: np.ndarray) -> list[Caption]:
        """Captions for (B, S, S, 3) uint8 images, attention maps shaped (words, gh, gw)."""
        return self._captions(self.generate(images))

    def caption_features(self, features: np.ndarray) -> list[Caption]:
        """Captions from cached encoder grids (B, L, D), as `model.grid_features` gives."""
        out = self._generate_from_features(tf.convert_to_tensor(features))
        return self._captions({k: v.numpy() for k, v in out.items()})

    def _captions(self, out: dict[str, np.ndarray]) -> list[Caption]:
        gh, gw = self.grid_size
        captions = []
        for tokens, score, alphas, betas in zip(
            out["tokens"], out["scores"], out["alphas"], out["betas"]
        ):
            words = self.vocab.decode(tokens)
            n = len(words)
            captions.append(
                Caption(
                    words=words,
                    score=float(score),
                    alphas=alphas[:n].reshape(n, gh, gw).astype(np.float32),
                    betas=betas[:n].astype(np.float32),
                )
            )
        return captions
