"""Word vocabulary: token <-> id mapping with reserved special tokens."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from captioner.errors import RunDirectoryError
from captioner.files import read_json, write_json_atomic

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)


class Vocabulary:
    """Maps words to ids; `<pad>` is 0, then `<start>`, `<end>`, `<unk>`, then the words.

    Args:
        words: the kept words, in id order (specials are added in front).
    """

    def __init__(self, words: Sequence[str]):
        words = [w for w in words if w not in SPECIAL_TOKENS]
        self.itos: list[str] = list(SPECIAL_TOKENS) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Keeps every word seen at least `min_count` times, most frequent first (ties by word)."""
        counts = Counter(w for tokens in captions for w in tokens)
        kept = [w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Words -> ids, unknown words as `<unk>`, no start/end added."""
        return [self.stoi.get(w, self.unk_id) for w in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at `<end>` and dropping `<pad>` and `<start>`."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return words

    def to_json(self) -> dict:
        return {"itos": self.itos}

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json(), indent=0)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Reads a saved vocabulary; a broken file raises `RunDirectoryError` naming it."""
        data = read_json(path, RunDirectoryError)
        itos = data.get("itos") if isinstance(data, dict) else None
        if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            raise RunDirectoryError(f"{path}: not a captioner vocabulary (no 'itos' word list)")
        if tuple(itos[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise RunDirectoryError(f"{path}: not a captioner vocabulary (bad special tokens)")
        try:
            return cls(itos[len(SPECIAL_TOKENS) :])
        except ValueError as error:
            raise RunDirectoryError(f"{path}: {error}") from None
