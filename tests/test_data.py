import numpy as np
import pytest

from captioner.data import encode_captions, load_karpathy, select_split, training_dataset
from captioner.vocab import Vocabulary
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


def test_training_batches_shapes_and_one_step_shift(tmp_path):
    records = select_split(load_karpathy(write_karpathy(tmp_path)), "train")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    ds = training_dataset(records, vocab, image_size=32, max_length=5, batch_size=2, seed=1)
    batches = list(ds)
    assert [b[1].shape[0] for b in batches] == [2, 1]  # every image once per epoch
    (images, caption_in), caption_out = batches[0]
    assert images.shape == (2, 32, 32, 3) and images.dtype.name == "uint8"
    assert caption_in.shape == caption_out.shape == (2, 6)
    caption_in, caption_out = caption_in.numpy(), caption_out.numpy()
    assert np.all(caption_in[:, 0] == vocab.start_id)
    # the target at step t is the input at step t + 1
    np.testing.assert_array_equal(caption_in[:, 1:], caption_out[:, :-1])
    lengths = (caption_out != 0).sum(axis=1)
    assert np.all(caption_out[np.arange(2), lengths - 1] == vocab.end_id)


def test_several_captions_per_image_without_repetition(tmp_path):
    records = select_split(load_karpathy(write_karpathy(tmp_path)), "train")
    records[0].captions.append(["a", "cat", "sits"])  # 3 captions, the others 2
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    ds = training_dataset(
        records, vocab, image_size=32, max_length=5, batch_size=3, captions_per_image=3
    )
    for _ in range(3):  # every epoch draws again
        (_, caption_in), caption_out = next(iter(ds))
        assert caption_in.shape == caption_out.shape == (3, 3, 6)
        real_counts = []
        for rows in caption_out.numpy():
            real = [tuple(r) for r in rows if r.any()]
            assert len(real) == len(set(real))  # no caption twice
            assert not rows[len(real) :].any()  # empty slots come last
            real_counts.append(len(real))
        assert sorted(real_counts) == [2, 2, 3]


def test_batches_from_cached_features_follow_the_records(tmp_path):
    records = select_split(load_karpathy(write_karpathy(tmp_path)), "train")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    # feature row i is filled with i, so every batch row shows which record it came from
    features = (np.arange(len(records))[:, None, None] * np.ones((1, 4, 5))).astype(np.float16)
    ds = training_dataset(
        records, vocab, image_size=32, max_length=5, batch_size=2, features=features
    )
    seen = []
    for (batch, caption_in), _ in ds:
        assert batch.shape[1:] == (4, 5) and batch.dtype.name == "float16"
        seen += [int(v) for v in batch.numpy()[:, 0, 0]]
        assert caption_in.shape[1] == 6
    assert sorted(seen) == list(range(len(records)))
