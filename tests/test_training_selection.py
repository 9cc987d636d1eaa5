"""The validation callback keeps the best epoch by the selected metric and stops early."""

import json
from pathlib import Path

from captioner import training
from captioner.selection import ModelSelector
from captioner.training import ValidationCallback


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
