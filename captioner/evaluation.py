"""Free-running evaluation of a captioner over a dataset split."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from captioner.data import ImageRecord, image_dataset
from captioner.inference import Caption, Captioner
from captioner.metrics import corpus_bleu, object_accuracy


def predict_records(
    captioner: Captioner, records: Sequence[ImageRecord], batch_size: int = 64
) -> list[Caption]:
    """Captions every record's image with free-running decoding, in record order."""
    images = image_dataset(records, captioner.image_size).batch(batch_size).prefetch(2)
    captions: list[Caption] = []
    for batch in images:
        captions.extend(captioner.caption(batch.numpy()))
    return captions


def score_captions(records: Sequence[ImageRecord], captions: Sequence[Caption]) -> dict:
    """BLEU-1…4 (0–100) and, where the dataset lists objects, object accuracy."""
    hypotheses = [c.words for c in captions]
    bleu = corpus_bleu(hypotheses, [r.captions for r in records])
    scores = {f"bleu{n}": value for n, value in enumerate(bleu, start=1)}
    if records and all(r.objects is not None for r in records):
        accuracy = object_accuracy(hypotheses, [r.objects for r in records])
        scores["object_accuracy"] = accuracy["overall"]
        scores["object_accuracy_by_count"] = accuracy["by_count"]
    return scores


def evaluate_split(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    *,
    split: str,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    extra: dict | None = None,
) -> dict:
    """Scores a split and, with `out_dir`, writes metrics.json, predictions.json and
    per_image.jsonl there.

    Returns:
        the metrics: scores on the 0–100 scale plus split, decoding settings and counts.
    """
    started = time.perf_counter()
    captions = predict_records(captioner, records, batch_size)
    metrics = score_captions(records, captions)
    metrics.update(
        split=split,
        **captioner.settings,
        num_images=len(records),
        num_references=sum(len(r.captions) for r in records),
        seconds=round(time.perf_counter() - started, 2),
        **(extra or {}),
    )
    if out_dir is not None:
        write_outputs(Path(out_dir), records, captions, metrics)
    return metrics


def write_outputs(
    out_dir: Path, records: Sequence[ImageRecord], captions: Sequence[Caption], metrics: dict
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    predictions = [{"image_id": r.image_id, "caption": c.text} for r, c in zip(records, captions)]
    (out_dir / "predictions.json").write_text(json.dumps(predictions) + "\n", encoding="utf-8")
    with (out_dir / "per_image.jsonl").open("w", encoding="utf-8") as f:
        for record, caption in zip(records, captions):
            row = {
                "image_id": record.image_id,
                "image": str(record.path),
                "hypothesis": caption.text,
                "references": [" ".join(c) for c in record.captions],
            }
            f.write(json.dumps(row) + "\n")
