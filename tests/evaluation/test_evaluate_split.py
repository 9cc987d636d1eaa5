"""Tests for captioner.evaluation.evaluate_split: a fake captioner, hand-made attention maps."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from captioner.data.dataset import ImageRecord
from captioner.evaluation import coco_metrics
from captioner.evaluation.evaluate_split import evaluate_split, score_captions
from captioner.evaluation.metrics import corpus_bleu, format_report
from captioner.inference.captioner import Caption

GRID = (4, 4)


def peak_at(row, col):
    alpha = np.full(GRID, 0.01)
    alpha[row, col] = 1.0
    return alpha / alpha.sum()


def make_records(tmp_path):
    """Two 128 x 64 scenes; the grid's cells are 32 x 16 px."""
    objects = [
        [{"name": "circle", "attributes": ["large", "red"], "bbox": [0, 0, 64, 32]}],
        [
            {"name": "circle", "attributes": ["small", "blue"], "bbox": [0, 0, 32, 16]},
            {"name": "square", "attributes": ["large", "red"], "bbox": [64, 32, 64, 32]},
        ],
    ]
    records = []
    for i, objs in enumerate(objects):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((64, 128, 3), 230, np.uint8)).save(path)
        refs = [["a", *o["attributes"], o["name"]] for o in objs]
        records.append(ImageRecord(i, path, "test", [sum(refs, [])], objs))
    return records


def caption(text, maps):
    words = text.split()
    return Caption(words, -1.0, np.stack(maps).astype(np.float32), np.ones(len(words)))


def make_captions():
    return [
        caption("a large red circle", [peak_at(3, 3)] * 3 + [peak_at(0, 1)]),  # hit
        # circle: peak (0, 0) is in its 32 x 16 box; square: peak (0, 0) is a miss.
        caption("a small blue circle a large red square", [peak_at(0, 0)] * 8),
    ]


def test_score_captions_bleu_objects_and_grounding(tmp_path, monkeypatch):
    monkeypatch.setattr(coco_metrics.importlib.util, "find_spec", lambda name: None)
    records, captions = make_records(tmp_path), make_captions()
    scores, per_image = score_captions(records, captions)
    expected = corpus_bleu([c.words for c in captions], [r.captions for r in records])
    assert [scores[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(expected)
    assert scores["meteor"] is None and scores["cider"] is None and scores["spice"] is None
    assert "captioner[coco]" in scores["not_computed"]["cider"]
    assert "offline" in scores["not_computed"]["spice"]
    assert scores["object_accuracy"] == pytest.approx(100.0)
    assert scores["pointing_accuracy"] == pytest.approx(100 * 2 / 3)
    assert scores["pointing_accuracy_by_count"] == pytest.approx({"1": 100.0, "2": 50.0})
    # Box area shares: 1/4, 1/16 and 1/4 of the image.
    assert scores["pointing_chance"] == pytest.approx(100 * (4 / 16 + 1 / 16 + 4 / 16) / 3)
    # The first word ("large") of image 0 looks at cell (3, 3): a miss.
    assert scores["pointing_accuracy_first_word"] == pytest.approx(100 * 1 / 3)
    assert scores["grounding_scored_words"] == 3
    assert [len(row["grounding"]) for row in per_image] == [1, 2]
    assert per_image[0]["grounding"][0]["hit"] is True
    assert [row["objects_correct"] for row in per_image] == [True, True]
    # Image 1: the circle's peak is on it, the square's is not.
    assert [row["pointing_accuracy"] for row in per_image] == pytest.approx([100.0, 50.0])
    assert 0 < per_image[1]["bleu4"] <= 100
    report = format_report(scores)
    assert "pointing_accuracy" in report and "meteor: not computed" in report


def test_score_captions_without_boxes_has_no_grounding(tmp_path):
    records = make_records(tmp_path)
    for record in records:
        record.objects = None
    scores, per_image = score_captions(records, make_captions(), coco_metrics=())
    assert "pointing_accuracy" not in scores and "object_accuracy" not in scores
    assert "meteor" not in scores and "grounding" not in per_image[0]
    assert "objects_correct" not in per_image[0] and "pointing_accuracy" not in per_image[0]
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        score_captions(records, make_captions()[:1])


class FakeCaptioner:
    image_size = 32
    max_length = 10
    settings = {"decoding": "beam", "beam_size": 3, "length_penalty": 0.0, "max_length": 10}

    def caption(self, images):
        assert images.shape[1:] == (32, 32, 3)
        return make_captions()[: len(images)]


def test_evaluate_split_writes_the_three_outputs(tmp_path):
    records = make_records(tmp_path)
    out = tmp_path / "eval"
    metrics = evaluate_split(
        FakeCaptioner(),
        records,
        split="test",
        out_dir=out,
        coco_metrics=(),
        extra={"model": "runs/x", "dataset": "d.json"},
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert saved["beam_size"] == 3 and saved["decoding"] == "beam"
    assert saved["num_images"] == 2 and saved["num_references"] == 2
    assert saved["model"] == "runs/x" and saved["seconds"] >= 0
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions == [
        {"image_id": 0, "caption": "a large red circle"},
        {"image_id": 1, "caption": "a small blue circle a large red square"},
    ]
    rows = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert rows[1]["references"] == ["a small blue circle a large red square"]
    assert {"hypothesis", "bleu4", "grounding"} <= set(rows[1])


def test_evaluate_split_writes_a_report_that_names_unreadable_images(tmp_path):
    records = make_records(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    records.append(ImageRecord(2, broken, "test", [["a", "red", "circle"]], []))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text(json.dumps([{"epoch": 1, "loss": 0.5}]))
    out = tmp_path / "eval"
    errors = []
    metrics = evaluate_split(
        FakeCaptioner(),
        records,
        split="test",
        out_dir=out,
        coco_metrics=(),
        extra={"model": str(run_dir), "dataset": "d.json"},
        on_error=errors.append,
        report=True,
        run_dir=run_dir,
    )
    assert metrics["num_unreadable_images"] == 1 and len(errors) == 1
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>test split of d.json</title>" in text and "training loss" in text
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1))
    items = data["items"]
    assert [item.get("words") for item in items] == [
        ["a", "large", "red", "circle"],
        "a small blue circle a large red square".split(),
        None,
    ]
    assert items[1]["scores"]["pointing_accuracy"] == pytest.approx(50.0)
    assert items[1]["marks"][1] == {"i": 7, "status": "matched", "object": 1, "hit": False}
    assert items[2]["missing"].startswith(f"{broken}: ") and "thumb" not in items[2]
    assert sorted(p.name for p in (out / "report_images").iterdir()) == ["00000.jpg", "00001.jpg"]
    # Without `report`, no page.
    evaluate_split(
        FakeCaptioner(), records[:2], split="test", out_dir=tmp_path / "e2", coco_metrics=()
    )
    assert not (tmp_path / "e2" / "report.html").exists()
