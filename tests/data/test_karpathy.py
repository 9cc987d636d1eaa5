import pytest

from captioner.data.batching import encode_captions
from captioner.data.dataset import select_split
from captioner.data.karpathy import load_karpathy
from captioner.data.vocabulary import Vocabulary
from tests.helpers import write_karpathy


@pytest.mark.parametrize("with_filepath", [True, False])
def test_karpathy_layouts(tmp_path, with_filepath):
    path = write_karpathy(tmp_path, with_filepath=with_filepath)
    records = load_karpathy(path)
    assert len(records) == 6
    assert all(r.path.is_file() for r in records)
    # tokens are used when present, otherwise the raw text is tokenised
    assert records[0].captions == [["a", "dog", "runs"], ["the", "dog", "running"]]


def test_restval_is_training_data(tmp_path):
    records = load_karpathy(write_karpathy(tmp_path))
    assert [r.split for r in select_split(records, "train")] == ["train", "train", "restval"]
    assert len(select_split(records, "val")) == 1
    assert len(select_split(records, "test")) == 2
    with pytest.raises(ValueError, match="unknown split"):
        select_split(records, "dev")


def test_images_root_overrides_json_folder(tmp_path):
    path = write_karpathy(tmp_path / "a")
    moved = tmp_path / "elsewhere"
    (tmp_path / "a" / "imgs").rename(tmp_path / "imgs_moved")
    moved.mkdir()
    (tmp_path / "imgs_moved").rename(moved / "imgs")
    records = load_karpathy(path, images_root=moved)
    assert all(r.path.is_file() for r in records)


def test_unknown_split_is_refused(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"images": [{"filename": "x.png", "split": "dev", "sentences": []}]}')
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_karpathy(path)


def test_encode_captions_adds_start_end_and_truncates(tmp_path):
    records = load_karpathy(write_karpathy(tmp_path))
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    ids, counts = encode_captions(records, vocab, max_length=2)
    assert ids.shape == (6, 2, 4)
    assert counts.tolist() == [2] * 6
    assert ids[0, 0].tolist() == [vocab.start_id, *vocab.encode(["a", "dog"]), vocab.end_id]
