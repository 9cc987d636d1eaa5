"""The validation callback keeps the best epoch by the selected metric and stops early."""

import json
from pathlib import Path

from captioner.training import validation as training
from captioner.training.selection import ModelSelector
from captioner.training.validation import ValidationCallback


class FakeModel:
    def __init__(self):
        self.saved = 0
        self.stop_training = False

    def save(self, path):
        self.saved += 1
        Path(path).write_bytes(b"model")


def test_callback_selects_by_metric_and_stops_early(tmp_path, monkeypatch):
    cider = iter([50.0, 70.0, 60.0, 65.0, 90.0])
    asked = []

    def fake_scores(captioner, records, metric, features=None):
        asked.append(metric)
        return {"bleu4": 99.0, "cider": next(cider)}  # BLEU-4 never decides here

    monkeypatch.setattr(training, "validation_scores", fake_scores)
    callback = ValidationCallback(
        None, ["val"], tmp_path, log=lambda line: None, selector=ModelSelector("cider", 2)
    )
    model = FakeModel()
    callback.set_model(model)
    callback.captioner = object()  # no real decoding
    epoch = 0
    while not model.stop_training:
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"loss": 1.0})
        epoch += 1
    assert epoch == 4 and asked == ["cider"] * 4
    assert model.saved == 2  # epochs 1 and 2
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["best"] for row in history] == [True, True, False, False]
    assert history[-1]["early_stop"] is True and history[1]["val_cider"] == 70.0


def test_a_resumed_callback_keeps_the_best_score_and_the_patience_count(tmp_path, monkeypatch):
    scores = {1: 50.0, 2: 70.0, 3: 60.0, 4: 65.0, 5: 90.0}

    def fake_scores(captioner, records, metric, features=None):
        return {"bleu4": scores[len(json.loads((tmp_path / "history.json").read_text())) + 1]}

    monkeypatch.setattr(training, "validation_scores", fake_scores)

    def callback():
        made = ValidationCallback(
            None, ["val"], tmp_path, log=lambda line: None, selector=ModelSelector("bleu4", 2)
        )
        made.set_model(FakeModel())
        made.captioner = object()
        return made

    (tmp_path / "history.json").write_text("[]")
    first = callback()
    for epoch in range(3):  # best at epoch 2, then one epoch without improvement
        first.on_epoch_end(epoch, {"loss": 1.0})
    state = json.loads(json.dumps(first.get_state()))  # as the checkpoint stores it
    resumed = callback()
    resumed.set_state(state)
    assert resumed.selector.best == 70.0 and resumed.selector.best_epoch == 2
    resumed.on_epoch_end(3, {"loss": 1.0})  # 65 < 70: the second epoch without improvement
    assert resumed.model.stop_training and resumed.model.saved == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["best"] for row in history] == [True, True, False, False]
