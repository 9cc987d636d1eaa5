import keras
import numpy as np
import pytest

from captioner.training.checkpoint import CheckpointStore


def _variables(seed):
    rng = np.random.default_rng(seed)
    return [
        keras.Variable(rng.normal(size=(3, 2)).astype("float32")),
        keras.Variable(np.int64(seed)),
    ]


def test_store_round_trip(tmp_path):
    store = CheckpointStore(tmp_path / "c.npz")
    model, optimizer = _variables(1), _variables(2)
    store.save(model, optimizer, {"epoch": 3, "sums": {"loss": 1.5}})
    other_model, other_optimizer = _variables(5), _variables(6)
    state = store.load(other_model, other_optimizer)
    assert state == {"epoch": 3, "sums": {"loss": 1.5}}
    for saved, loaded in zip(model + optimizer, other_model + other_optimizer):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())


def test_non_finite_values_keep_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path / "c.npz")
    store.save(_variables(1), [], {"epoch": 1})
    broken = _variables(2)
    broken[0].assign(np.full((3, 2), np.nan, "float32"))
    with pytest.raises(FloatingPointError, match="not finite"):
        store.save(broken, [], {"epoch": 2})
    assert store.load(_variables(3), []) == {"epoch": 1}


def test_checkpoint_of_another_model_is_refused(tmp_path):
    store = CheckpointStore(tmp_path / "c.npz")
    store.save(_variables(1), [], {})
    with pytest.raises(ValueError, match="c.npz.*shape"):
        store.load([keras.Variable(np.zeros((4, 2), "float32")), keras.Variable(0)], [])
    with pytest.raises(ValueError, match="c.npz.*different configuration"):
        store.load(_variables(1)[:1], [])
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz: not a readable checkpoint"):
        CheckpointStore(tmp_path / "bad.npz").load([], [])


def test_read_only_store_restores_but_never_writes(tmp_path):
    CheckpointStore(tmp_path / "c.npz").save(_variables(1), [], {"epoch": 4})
    reader = CheckpointStore(tmp_path / "c.npz", read_only=True)
    reader.save(_variables(2), [], {"epoch": 9})
    assert reader.load(_variables(3), []) == {"epoch": 4}
