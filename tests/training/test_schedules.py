import keras
import numpy as np
import pytest

from captioner.training.schedules import PlateauReducer, WarmupSchedule


def rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_warmup_then_cosine():
    schedule = WarmupSchedule(1e-3, warmup_steps=10, decay_steps=110, alpha=0.1)
    assert rate(schedule, 0) == pytest.approx(1e-4)
    assert rate(schedule, 4) == pytest.approx(5e-4)
    assert rate(schedule, 9) == pytest.approx(1e-3)
    assert rate(schedule, 60) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert rate(schedule, 110) == pytest.approx(1e-4)
    assert rate(schedule, 500) == pytest.approx(1e-4)
    rates = [rate(schedule, s) for s in range(10, 111, 10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_schedule_round_trips_its_config():
    schedule = WarmupSchedule(2e-3, warmup_steps=5, decay_steps=50, kind="plateau", scale=0.25)
    again = WarmupSchedule.from_config(schedule.get_config())
    for step in (0, 3, 40):
        assert rate(again, step) == pytest.approx(rate(schedule, step))
    with pytest.raises(ValueError, match="schedule must be one of"):
        WarmupSchedule(1e-3, kind="linear")


def test_plateau_lowers_the_rate_after_patience_epochs():
    schedule = WarmupSchedule(1e-3, kind="plateau")
    reducer = PlateauReducer(schedule, factor=0.5, patience=2, log=lambda _: None)
    for value in (1.0, 2.0, 2.0):  # improvement, then one epoch without
        reducer.on_epoch_end(0, {"val_bleu4": value, "loss": 1.0})
    assert rate(schedule, 100) == pytest.approx(1e-3)
    reducer.on_epoch_end(0, {"val_bleu4": 1.5, "loss": 1.0})  # second epoch without
    assert rate(schedule, 100) == pytest.approx(5e-4)
    state = reducer.get_state()
    other = PlateauReducer(WarmupSchedule(1e-3, kind="plateau"), patience=2)
    other.set_state(state)
    assert rate(other.schedule, 100) == pytest.approx(5e-4)
    assert other.best == 2.0
    # without validation scores the training loss is monitored (lower is better)
    reducer = PlateauReducer(WarmupSchedule(1e-3, kind="plateau"), patience=1, log=print)
    reducer.on_epoch_end(0, {"loss": 2.0})
    reducer.on_epoch_end(1, {"loss": 2.5})
    assert np.isclose(rate(reducer.schedule, 0), 5e-4)
