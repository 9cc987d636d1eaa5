"""Free-running evaluation of a captioner over a dataset split."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from captioner.data import ImageRecord, image_dataset
from captioner.inference import Caption, Captioner
from captioner.metrics import corpus_bleu, object_accuracy


def predict_records(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    batch_size: int = 64,
    on_error: Callable[[str], None] | None = None,
) -> list[Caption | None]:
    """Captions every record's image with free-running decoding, in record order.

    An image that cannot be read gets None; its error message goes to `on_error`.
    """
    images = image_dataset(records, captioner.image_size, on_error=on_error)
    captions: list[Caption | None] = [None] * len(records)
    for indices, batch in images.batch(batch_size).prefetch(2):
        for index, caption in zip(indices.numpy(), captioner.caption(batch.numpy())):
            captions[index] = caption
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
    on_error: Callable[[str], None] | None = None,
) -> dict:
    """Scores a split and, with `out_dir`, writes metrics.json, predictions.json and
    per_image.jsonl there.

    Images that cannot be read are reported through `on_error`, left out of the scores
    and counted as `num_unreadable_images`.

    Returns:
        the metrics: scores on the 0–100 scale plus split, decoding settings and counts.
    """
    started = time.perf_counter()
    predicted = predict_records(captioner, records, batch_size, on_error)
    unreadable = sum(c is None for c in predicted)
    records = [r for r, c in zip(records, predicted) if c is not None]
    captions = [c for c in predicted if c is not None]
    metrics = score_captions(records, captions)
    metrics.update(
        split=split,
        decoding="greedy",
        beam_size=1,
        max_length=captioner.max_length,
        num_images=len(records),
        num_references=sum(len(r.captions) for r in records),
        num_unreadable_images=unreadable,
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
