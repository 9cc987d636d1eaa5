"""Captioning with a trained model: compiled decoding and per-image results."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.config import DECODING_OPTIONS, TrainConfig
from captioner.data.vocabulary import Vocabulary
from captioner.errors import RunDirectoryError
from captioner.inference.ensemble import DecoderEnsemble
from captioner.inference.search import beam_search, greedy_search

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


def same_encoder(model: keras.Model, other: keras.Model) -> bool:
    """Whether two captioning models compute the same grid features: the same encoder
    class, input size, grid and weights."""
    if (type(model.encoder), model.image_size, model.grid_size) != (
        type(other.encoder),
        other.image_size,
        other.grid_size,
    ):
        return False
    weights, others = model.encoder.get_weights(), other.encoder.get_weights()
    return len(weights) == len(others) and all(
        w.shape == o.shape and np.array_equal(w, o) for w, o in zip(weights, others)
    )


def _load_run(run_dir: str | Path) -> tuple[keras.Model, Vocabulary, TrainConfig]:
    """The model, vocabulary and settings of a run directory (see `Captioner.from_run_dir`)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirectoryError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir}: not a run directory (a file)")
    for name in (MODEL_FILE, VOCAB_FILE, CONFIG_FILE):
        if not (run_dir / name).is_file():
            raise RunDirectoryError(f"{run_dir}: not a run directory (no {name})")
    config = TrainConfig.load(run_dir / CONFIG_FILE)  # refuses an incompatible version
    vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    model = load_model_file(run_dir / MODEL_FILE)
    if len(vocab) != model.vocab_size:
        raise RunDirectoryError(
            f"{run_dir / VOCAB_FILE}: {len(vocab)} words, but {MODEL_FILE} was built for "
            f"{model.vocab_size}; the two files come from different runs"
        )
    return model, vocab, config


def load_model_file(path: str | Path) -> keras.Model:
    """Loads a saved `CaptioningModel` in Keras safe mode, without its optimizer.

    Raises:
        RunDirectoryError: the file is missing, truncated, not a `.keras` archive, holds
            another kind of model, or asks to run code (refused by safe mode).
    """
    import captioner.models.captioning_model as model_module  # registers the custom layers

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # checks every member's CRC
    except FileNotFoundError:
        raise RunDirectoryError(f"{path}: no such model file") from None
    except (zipfile.BadZipFile, EOFError):
        raise RunDirectoryError(
            f"{path}: not a .keras model file (not a zip archive: truncated or another format)"
        ) from None
    except OSError as error:
        raise RunDirectoryError(f"{path}: cannot read file ({error.strerror or error})") from None
    if damaged is not None:
        raise RunDirectoryError(f"{path}: damaged model file ({damaged} fails its checksum)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001  (Keras raises many types for bad archives)
        reason = " ".join(str(error).split())
        if "safe_mode" in reason:
            first_sentence = reason.split(". ")[0]
            raise RunDirectoryError(
                f"{path}: refused by Keras safe mode, loading it would run code stored in the "
                f"file ({first_sentence})"
            ) from None
        raise RunDirectoryError(
            f"{path}: cannot load the model ({type(error).__name__}: {reason[:300]})"
        ) from None
    if not isinstance(model, model_module.CaptioningModel):
        raise RunDirectoryError(
            f"{path}: a {type(model).__name__}, not a captioning model saved by captioner"
        )
    return model


class Captioner:
    """Generates captions for batches of images with a `CaptioningModel`.

    Args:
        model: a built `CaptioningModel`.
        vocab: its vocabulary.
        max_length: the most words to generate (defaults to the model's).
        beam_size: 1 for greedy decoding, more for beam search.
        length_penalty: beam search ranks captions by log-probability / length ** this.
        no_repeat_ngram: n > 0: no caption repeats a sequence of n words ("on a bike on a
            bike" with 3); 0: no such rule.
        suppress_unk: never generate `<unk>` (on by default: a caption shown to a person
            should not say it; the next likeliest word is taken instead).
        jit_compile: compile the search with XLA.
        members: more models that decode together with `model` as an ensemble
            (`DecoderEnsemble`): each needs `vocab` and `model`'s encoder. Attention maps
            stay `model`'s.
    """

    def __init__(
        self,
        model: keras.Model,
        vocab: Vocabulary,
        max_length: int | None = None,
        *,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        no_repeat_ngram: int = 0,
        suppress_unk: bool = True,
        jit_compile: bool = False,
        members: Sequence[keras.Model] = (),
    ):
        for member in (model, *members):
            if len(vocab) != member.vocab_size:
                raise ValueError(
                    f"vocabulary has {len(vocab)} words but a model was built for "
                    f"{member.vocab_size}"
                )
        if not all(same_encoder(model, member) for member in members):
            raise ValueError("an ensemble's models must share the encoder and image size")
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {beam_size}")
        if no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be 0 or more, got {no_repeat_ngram}")
        self.model = model
        self.members = tuple(members)
        self.decoder = (
            DecoderEnsemble([m.decoder for m in (model, *members)]) if members else model.decoder
        )
        self.vocab = vocab
        self.max_length = max_length or model.max_length
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.no_repeat_ngram = no_repeat_ngram
        self.suppress_unk = suppress_unk
        self.image_size = model.image_size
        self.grid_size = model.grid_size
        signature = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.uint8)
        self._generate = tf.function(
            self.generate_graph, input_signature=[signature], jit_compile=jit_compile
        )
        # Cached grid features: (B, L, D_encoder) float32, one trace for every batch size.
        _, grid_h, grid_w, depth = model.encoder.compute_output_shape(
            (None, self.image_size, self.image_size, 3)
        )
        features_signature = tf.TensorSpec((None, grid_h * grid_w, depth), tf.float32)
        self._generate_from_features = tf.function(
            self.generate_from_features_graph,
            input_signature=[features_signature],
            jit_compile=jit_compile,
        )

    @property
    def settings(self) -> dict:
        """The decoding settings, as reported next to scores."""
        greedy = self.beam_size == 1 and self.length_penalty == 0
        return {
            "decoding": "greedy" if greedy else "beam",
            "beam_size": self.beam_size,
            "length_penalty": self.length_penalty,
            "no_repeat_ngram": self.no_repeat_ngram,
            "suppress_unk": self.suppress_unk,
            "max_length": self.max_length,
        }

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        ensemble: Sequence[str | Path] = (),
        decoding_for: str | None = None,
        **options,
    ) -> Captioner:
        """Loads the model and vocabulary that `captioner train` wrote to `run_dir`.

        `ensemble`: more run directories whose models decode together with it (`members`).
        `options` are the decoding settings of the constructor (beam_size, ...).
        `decoding_for`: a command ("evaluate", "caption" or "export") whose decoding defaults
        for this run (`TrainConfig.decoding_defaults`, by the kind of data it was trained
        on) give the beam width, length penalty and no-repeat n-gram size that `options`
        leave out or set to None.

        Raises:
            RunDirectoryError: a missing, truncated, incompatible or unsafe file; the message
                names it. The model loads in Keras safe mode, so no file can run code. An
                ensemble's run with another vocabulary or encoder than `run_dir`'s.
        """
        model, vocab, config = _load_run(run_dir)
        if decoding_for is not None:
            defaults = config.decoding_defaults(decoding_for)
            for name, default in zip(DECODING_OPTIONS, defaults, strict=True):
                if options.get(name) is None:
                    options[name] = default
        members = []
        for other in ensemble:
            member, member_vocab, _ = _load_run(other)
            if member_vocab.itos != vocab.itos:
                raise RunDirectoryError(
                    f"{Path(other) / VOCAB_FILE}: another vocabulary than {run_dir}'s; an "
                    "ensemble's models must share it"
                )
            if not same_encoder(model, member):
                raise RunDirectoryError(
                    f"{Path(other) / MODEL_FILE}: another encoder or image size than "
                    f"{run_dir}'s; an ensemble's models must read the same grid"
                )
            members.append(member)
        return cls(model, vocab, members=members, **options)

    @property
    def search_options(self) -> dict:
        """The token settings every search of this captioner uses (ids, length, banned)."""
        banned = [self.vocab.pad_id, self.vocab.start_id]
        if self.suppress_unk:
            banned.append(self.vocab.unk_id)
        return dict(
            start_id=self.vocab.start_id,
            end_id=self.vocab.end_id,
            max_length=self.max_length + 1,  # room for <end>
            banned_ids=tuple(banned),
            pad_id=self.vocab.pad_id,
        )

    def search(self, features, grid=None):
        """Decodes (B, L, D_encoder) grid features with the configured search
        (`captioner.inference.search`); `grid` (gh, gw) as `model.annotate` takes it.

        This is the one search entry point: the features may come from images
        (`model.grid_features`) or from the feature cache. Each model of an ensemble
        annotates them with its own layers.
        """
        annotations = [m.annotate(features, grid) for m in (self.model, *self.members)]
        decoder = self.decoder
        options = self.search_options
        state = decoder.initial_state(annotations if self.members else annotations[0])
        if self.settings["decoding"] == "greedy":
            return greedy_search(
                decoder.step, state, no_repeat_ngram=self.no_repeat_ngram, **options
            )
        return beam_search(
            decoder.step,
            state,
            beam_size=self.beam_size,
            length_penalty=self.length_penalty,
            static_entries=decoder.static_state_entries,
            no_repeat_ngram=self.no_repeat_ngram,
            **options,
        )

    def generate_graph(self, images):
        """(B, S, S, 3) uint8 images -> the search output; traceable by `tf.function`."""
        grid = self.model.encoder.compute_output_shape(tuple(images.shape))[1:3]
        return self.search(self.model.grid_features(images), grid)

    def generate_from_features_graph(self, features):
        """(B, L, D_encoder) cached grid features -> the search output; traceable."""
        return self.search(features)

    def generate(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw search output for (B, S, S, 3) uint8 images, as NumPy arrays."""
        return {k: v.numpy() for k, v in self._generate(tf.convert_to_tensor(images)).items()}

    def caption(self, images: np.ndarray) -> list[Caption]:
        """Captions for (B, S, S, 3) uint8 images, attention maps shaped (words, gh, gw)."""
        return self._captions(self.generate(images))

    def generate_from_features(self, features) -> dict[str, np.ndarray]:
        """Raw search output for cached encoder grids (B, L, D), as NumPy arrays."""
        features = tf.cast(tf.convert_to_tensor(features), tf.float32)
        return {k: v.numpy() for k, v in self._generate_from_features(features).items()}

    def caption_features(self, features: np.ndarray) -> list[Caption]:
        """Captions from cached encoder grids (B, L, D), as `model.grid_features` gives."""
        return self._captions(self.generate_from_features(features))

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
