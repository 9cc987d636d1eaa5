"""tools/results_tables.py: the docs' tables come from run files, formatted as documented."""

import importlib.util
import json

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("results_tables", ROOT / "tools/results_tables.py")
results_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_tables)


def test_scores_table_rows_from_metrics_files(tmp_path):
    greedy, beam = tmp_path / "test", tmp_path / "beam3"
    for folder, beam_size, bleu4 in ((greedy, 1, 97.094), (beam, 3, 96.9)):
        folder.mkdir()
        metrics = {
            "beam_size": beam_size,
            "bleu4": bleu4,
            "cider": None,
            "object_accuracy_by_count": {"1": 97.69, "2": 95.65, "3": 78.92},
            "pointing_accuracy": 61.08,
            "pointing_chance": 5.31,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    table = results_tables.scores_table(
        [f"default={greedy}", f"default={beam}"],
        ["decoding", "bleu4", "cider", "by_count", "pointing"],
    )
    assert table.splitlines() == [
        "| model | decoding | BLEU-4 | CIDEr-D | 1 / 2 / 3 objects | pointing (chance) |",
        "| --- | --- | --- | --- | --- | --- |",
        "| default | greedy | 97.09 | – | 97.7 / 95.7 / 78.9 | 61.1 (5.3) |",
        "| default | beam 3 | 96.90 | – | 97.7 / 95.7 / 78.9 | 61.1 (5.3) |",
    ]


def test_curves_table_one_row_per_key(tmp_path):
    history = [{"epoch": 1, "val_bleu4": 64.58}, {"epoch": 2, "val_bleu4": 83.2}]
    (tmp_path / "history.json").write_text(json.dumps(history))
    table = results_tables.curves_table(tmp_path, ["val_bleu4", "val_cider"])
    assert table.splitlines()[0] == "| epoch | 1 | 2 |"
    assert table.splitlines()[2:] == ["| val_bleu4 | 64.58 | 83.20 |", "| val_cider | – | – |"]
