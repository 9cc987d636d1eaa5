"""Captioning with a trained model: compiled decoding and per-image results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.config import TrainConfig
from captioner.search import beam_search, greedy_search
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
        beam_size: 1 for greedy decoding, more for beam search.
        length_penalty: beam search ranks captions by log-probability / length ** this.
        suppress_unk: never generate `<unk>`.
        jit_compile: compile the search with XLA.
    """

    def __init__(
        self,
        model: keras.Model,
        vocab: Vocabulary,
        max_length: int | None = None,
        *,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        suppress_unk: bool = False,
        jit_compile: bool = False,
    ):
        if len(vocab) != model.vocab_size:
            raise ValueError(
                f"vocabulary has {len(vocab)} words but the model was built for {model.vocab_size}"
            )
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {beam_size}")
        self.model = model
        self.vocab = vocab
        self.max_length = max_length or model.max_length
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.suppress_unk = suppress_unk
        self.image_size = model.image_size
        self.grid_size = model.grid_size
        signature = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.uint8)
        self._generate = tf.function(
            self.generate_graph, input_signature=[signature], jit_compile=jit_compile
        )

    @property
    def settings(self) -> dict:
        """The decoding settings, as reported next to scores."""
        greedy = self.beam_size == 1 and self.length_penalty == 0
        return {
            "decoding": "greedy" if greedy else "beam",
            "beam_size": self.beam_size,
            "length_penalty": self.length_penalty,
            "suppress_unk": self.suppress_unk,
            "max_length": self.max_length,
        }

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **options) -> Captioner:
        """Loads the model and vocabulary that `captioner train` wrote to `run_dir`.

        `options` are the decoding settings of the constructor (beam_size, ...).
        """
        run_dir = Path(run_dir)
        for name in (MODEL_FILE, VOCAB_FILE, CONFIG_FILE):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"{run_dir}: not a run directory (no {name})")
        TrainConfig.load(run_dir / CONFIG_FILE)  # refuses runs of an incompatible version
        import captioner.model  # noqa: F401  (registers the custom layers)

        model = keras.saving.load_model(run_dir / MODEL_FILE, compile=False, safe_mode=True)
        return cls(model, Vocabulary.load(run_dir / VOCAB_FILE), **options)

    def search(self, annotations):
        """Decodes (B, L, D) annotations with the configured search; see `captioner.search`."""
        decoder = self.model.decoder
        banned = [self.vocab.pad_id, self.vocab.start_id]
        if self.suppress_unk:
            banned.append(self.vocab.unk_id)
        options = dict(
            start_id=self.vocab.start_id,
            end_id=self.vocab.end_id,
            max_length=self.max_length + 1,  # room for <end>
            banned_ids=tuple(banned),
            pad_id=self.vocab.pad_id,
        )
        state = decoder.initial_state(annotations)
        if self.settings["decoding"] == "greedy":
            return greedy_search(decoder.step, state, **options)
        return beam_search(
            decoder.step,
            state,
            beam_size=self.beam_size,
            length_penalty=self.length_penalty,
            static_entries=decoder.static_state_entries,
            **options,
        )

    def generate_graph(self, images):
        """(B, S, S, 3) uint8 images -> the search output; traceable by `tf.function`."""
        annotations, _ = self.model.encode(images)
        return self.search(annotations)

    def generate(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw search output for (B, S, S, 3) uint8 images, as NumPy arrays."""
        return {k: v.numpy() for k, v in self._generate(tf.convert_to_tensor(images)).items()}

    def caption(self, images: np.ndarray) -> list[Caption]:
        """Captions for (B, S, S, 3) uint8 images, attention maps shaped (words, gh, gw)."""
        out = self.generate(images)
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
