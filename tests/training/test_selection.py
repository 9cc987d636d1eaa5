"""Tests for captioner.training.selection."""

import math

import pytest

from captioner.evaluation import coco_metrics
from captioner.training.selection import ModelSelector, check_select_metric


def test_selector_keeps_the_best_and_stops_after_patience():
    selector = ModelSelector("bleu4", patience=2)
    assert [selector.update(v, e) for e, v in enumerate([10.0, 12.0, 11.0], 1)] == [
        True,
        True,
        False,
    ]
    assert selector.best == 12.0 and selector.best_epoch == 2 and not selector.should_stop
    assert selector.update(12.0, 4) is False  # equal is not better
    assert selector.should_stop
    assert selector.update(13.0, 5) is True and not selector.should_stop


def test_selector_without_patience_never_stops_and_ignores_missing_scores():
    selector = ModelSelector("cider")
    for epoch in range(1, 20):
        selector.update(None, epoch)
        selector.update(math.nan, epoch)
    assert not selector.should_stop and selector.best_epoch is None
    with pytest.raises(ValueError, match="patience"):
        ModelSelector(patience=-1)


def test_check_select_metric(monkeypatch):
    check_select_metric("bleu4")
    check_select_metric("pointing_accuracy_all_objects")
    with pytest.raises(ValueError, match="by naming fewer objects; use pointing_accuracy_all"):
        check_select_metric("pointing_accuracy")  # a model raises it by saying less
    with pytest.raises(ValueError, match="unknown selection metric 'xent'"):
        check_select_metric("xent")  # teacher-forced scores are not selectable
    monkeypatch.setattr(coco_metrics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"cannot select by cider: .*captioner\[coco\]"):
        check_select_metric("cider")
