import numpy as np

from captioner.batching import LENGTH_STEP, EpochBatches, array_lookup, cut_length

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
    real = source.caption_lengths[source.plan(0).image_index, source.plan(0).caption_index]
    assert np.isclose(source.padded_share(), 1 - real.sum() / (N * T))
