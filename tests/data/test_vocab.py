import pytest

from captioner.data.vocabulary import SPECIAL_TOKENS, Vocabulary


def test_specials_come_first_and_pad_is_zero():
    vocab = Vocabulary.build([["a", "dog"], ["a", "cat"]])
    assert vocab.itos[:4] == list(SPECIAL_TOKENS)
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.stoi["<pad>"] == 0
    assert vocab.itos[4] == "a"  # most frequent first


def test_min_count_drops_rare_words_to_unk():
    vocab = Vocabulary.build([["a", "dog"], ["a", "cat"], ["a", "dog"]], min_count=2)
    assert "cat" not in vocab.stoi
    assert vocab.encode(["a", "cat"]) == [vocab.stoi["a"], vocab.unk_id]


def test_decode_stops_at_end_and_drops_pad_and_start():
    vocab = Vocabulary(["a", "dog"])
    ids = [vocab.start_id, *vocab.encode(["a", "dog"]), vocab.end_id, 5, 0]
    assert vocab.decode(ids) == ["a", "dog"]


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build([["ein", "hund"], ["ein", "café", "😀"]])
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.itos == vocab.itos
    assert loaded.encode(["café", "😀", "x"]) == vocab.encode(["café", "😀", "x"])


def test_load_refuses_other_json(tmp_path):
    (tmp_path / "v.json").write_text('{"itos": ["a", "b"]}')
    with pytest.raises(ValueError, match="not a captioner vocabulary"):
        Vocabulary.load(tmp_path / "v.json")
