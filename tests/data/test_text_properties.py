"""Property-based tests: caption tokenisation and the vocabulary on any Unicode input."""

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.data.text import PUNCTUATION, tokenize
from captioner.data.vocabulary import SPECIAL_TOKENS, UNK, Vocabulary

# Any Unicode text, lone surrogates included (JSON escapes can produce them).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
words = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_tokens_are_non_empty_lower_case_words_without_spaces(text):
    tokens = tokenize(text)
    assert isinstance(tokens, list)
    for token in tokens:
        assert isinstance(token, str) and token
        assert not any(ch.isspace() for ch in token)
        assert token not in PUNCTUATION


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_tokenising_tokens_again_changes_nothing(text):
    tokens = tokenize(text)
    assert tokenize(" ".join(tokens)) == tokens


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(words, max_size=8), max_size=10), st.integers(1, 3))
def test_vocabulary_round_trip(captions, min_count):
    vocab = Vocabulary.build(captions, min_count)
    assert vocab.itos[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert len(set(vocab.itos)) == len(vocab)
    for tokens in captions:
        ids = vocab.encode(tokens)
        assert all(0 <= i < len(vocab) for i in ids)
        expected = [
            UNK if w in SPECIAL_TOKENS or w not in vocab.stoi else w
            for w in tokens
            if w not in ("<pad>", "<start>")
        ]
        decoded = vocab.decode([vocab.start_id, *ids, vocab.end_id, vocab.pad_id])
        if "<end>" in tokens:  # decoding stops at the first <end>
            expected = expected[
                : [w for w in tokens if w not in ("<pad>", "<start>")].index("<end>")
            ]
        assert decoded == expected
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        vocab.save(path)
        assert Vocabulary.load(path).itos == vocab.itos


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_vocabulary_from_any_caption_text_saves_and_loads(text):
    vocab = Vocabulary.build([tokenize(text)])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        vocab.save(path)
        assert Vocabulary.load(path).itos == vocab.itos
