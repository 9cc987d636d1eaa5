import numpy as np
from PIL import Image

from captioner.data.batching import (
    LENGTH_STEP,
    EpochBatches,
    array_lookup,
    cut_length,
    encode_captions,
    file_lookup,
    memmap_lookup,
)
from captioner.data.dataset import select_split
from captioner.data.karpathy import load_karpathy
from captioner.data.vocabulary import Vocabulary
from captioner.training.inputs import image_inputs
from tests.helpers import write_karpathy

N, C, T = 100, 3, 21


def caption_ids(seed=0):
    """(N, C, T + 1) `<start>=1 w… <end>=2` with 3..20 words."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((N, C, T + 1), np.int32)
    for i in range(N):
        for j in range(C):
            words = int(rng.integers(3, T))
            ids[i, j, : words + 2] = [1, *rng.integers(4, 9, words), 2]
    return ids


def batches(bucketing=True, batch_size=16):
    inputs = np.arange(N, dtype=np.float32)[:, None]  # each image's input is its index
    ids = caption_ids()
    return EpochBatches(
        array_lookup(inputs), ids, np.full(N, C), batch_size=batch_size, bucketing=bucketing
    )


def test_an_epoch_visits_every_image_once_with_one_of_its_captions():
    source = batches()
    ids = source.caption_ids
    seen = []
    for (inputs, caption_in), caption_out in source.dataset(epoch=0):
        assert caption_in.shape == caption_out.shape
        for index, words_in, words_out in zip(inputs[:, 0], caption_in, caption_out):
            index = int(index)
            seen.append(index)
            full = np.concatenate([words_in.numpy()[:1], words_out.numpy()])
            matches = [
                np.array_equal(full, c[: len(full)]) and not c[len(full) :].any()
                for c in ids[index]
            ]
            assert any(matches)
    assert sorted(seen) == list(range(N))


def test_plans_depend_on_seed_and_epoch_only():
    a, b = batches(), batches()
    np.testing.assert_array_equal(a.plan(2).image_index, b.plan(2).image_index)
    np.testing.assert_array_equal(a.plan(2).caption_index, b.plan(2).caption_index)
    assert not np.array_equal(a.plan(2).image_index, a.plan(3).image_index)


def test_skipping_batches_gives_the_rest_of_the_epoch():
    source = batches()
    whole = list(source.dataset(epoch=1))
    rest = list(source.dataset(epoch=1, skip_batches=4))
    assert len(rest) == len(whole) - 4
    for ((x1, c1), y1), ((x2, c2), y2) in zip(whole[4:], rest):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(y1, y2)


def test_bucketing_cuts_batches_and_reduces_padding():
    bucketed, plain = batches(bucketing=True), batches(bucketing=False)
    assert bucketed.padded_share() < plain.padded_share() / 2
    lengths = set()
    for _, caption_out in bucketed.dataset(epoch=0):
        steps = caption_out.shape[1]
        lengths.add(steps)
        longest = int(np.count_nonzero(caption_out.numpy(), axis=1).max())
        assert steps == cut_length(longest, T)
        assert steps % LENGTH_STEP == 0 or steps == T
    assert len(lengths) > 1
    for _, caption_out in plain.dataset(epoch=0):
        assert caption_out.shape[1] == T


def test_padded_share_counts_positions():
    source = batches(bucketing=False, batch_size=N)
    plan = source.plan(0)
    real = source.caption_lengths[plan.image_index[:, None], plan.caption_index]
    assert np.isclose(source.padded_share(), 1 - real.sum() / (N * T))


def karpathy_batches(tmp_path, lookup=None, **options):
    records = select_split(load_karpathy(write_karpathy(tmp_path)), "train")
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    if lookup is None:
        lookup, records = image_inputs(records, 32)
    ids, counts = encode_captions(records, vocab, max_length=5)
    return EpochBatches(lookup, ids, counts, **options), vocab, records


def test_batches_shapes_and_one_step_shift(tmp_path):
    source, vocab, _ = karpathy_batches(tmp_path, batch_size=2, seed=1, bucketing=False)
    batches = list(source.dataset(epoch=0))
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


def test_several_captions_per_image_without_repetition():
    ids = caption_ids()
    counts = np.full(N, C)
    counts[::2] = 2  # every other image has 2 captions: its third slot is padding
    ids[::2, 2] = 0
    inputs = np.arange(N, dtype=np.float32)[:, None]
    source = EpochBatches(
        array_lookup(inputs), ids, counts, batch_size=10, captions_per_image=4, bucketing=True
    )
    for epoch in range(2):
        seen = []
        for (index, caption_in), caption_out in source.dataset(epoch):
            assert caption_in.shape == caption_out.shape
            assert caption_in.shape[:2] == (len(index), 4)  # (B, C, T): one more slot than any
            for image, rows in zip(index.numpy()[:, 0].astype(int), caption_out.numpy()):
                real = [tuple(r[r != 0]) for r in rows if r.any()]
                assert len(real) == len(set(real)) == counts[image]  # all, none twice
                assert not rows[len(real) :].any()  # empty slots come last
                expected = {tuple(c[1:][c[1:] != 0]) for c in ids[image, : counts[image]]}
                assert set(real) == expected
                seen.append(image)
        assert sorted(seen) == list(range(N))
    # the padding is planned as the batches cut it
    plan = source.plan(0)
    assert plan.caption_index.shape == (N, 4)


def test_batches_from_cached_features_follow_their_rows(tmp_path):
    # cache row i is filled with i; training uses rows 3, 0, 2 (row 1: an unreadable image)
    features = (np.arange(4)[:, None, None] * np.ones((1, 4, 5))).astype(np.float16)
    np.save(tmp_path / "features.npy", features)
    cache = np.load(tmp_path / "features.npy", mmap_mode="r")
    rows = np.array([3, 0, 2])
    source, vocab, _ = karpathy_batches(
        tmp_path, memmap_lookup(cache, rows), batch_size=2, bucketing=False
    )
    seen = []
    for (batch, caption_in), _ in source.dataset(epoch=0):
        assert batch.shape[1:] == (4, 5) and batch.dtype.name == "float16"
        seen += [int(v) for v in batch.numpy()[:, 0, 0]]
        assert caption_in.shape[1] == 6
    plan_rows = rows[source.plan(0).image_index].tolist()
    assert seen == plan_rows and sorted(seen) == [0, 2, 3]


def write_numbered_images(tmp_path):
    """Image k is filled with the value 10 * k; images 2 and 4 are unreadable."""
    paths = []
    for k in range(6):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(path)
        paths.append(path)
    paths[2].write_bytes(b"")
    paths[4].write_bytes(b"\x89PNG\r\n\x1a\n")
    return paths


def test_file_lookup_leaves_unreadable_images_out_of_their_batch(tmp_path):
    paths = write_numbered_images(tmp_path)
    messages = []
    ids = np.zeros((6, 1, 4), np.int32)
    ids[:, 0, :3] = [[1, 10 + k, 2] for k in range(6)]  # image k: the word 10 + k
    source = EpochBatches(
        file_lookup([str(p) for p in paths], 8, on_error=messages.append),
        ids,
        np.ones(6),
        batch_size=6,
        bucketing=False,
    )
    for epoch in range(2):
        seen = {}
        for (images, caption_in), _ in source.dataset(epoch):
            for image, caption in zip(images.numpy(), caption_in.numpy()):
                seen[int(image[0, 0, 0]) // 10] = int(caption[1]) - 10
        assert seen == {k: k for k in (0, 1, 3, 5)}, epoch
    assert sorted(messages) == [
        f"{paths[2]}: empty file (0 bytes) (skipped)",
        f"{paths[4]}: cannot decode image (a damaged PNG file) (skipped)",
    ]
