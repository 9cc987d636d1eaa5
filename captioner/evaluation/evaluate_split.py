"""Free-running evaluation of a captioner over a dataset split."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.data.dataset import ImageRecord
from captioner.data.image_pipeline import image_dataset
from captioner.evaluation.attention_focus import attention_focus_scores
from captioner.evaluation.coco_metrics import COCO_METRICS, coco_scores
from captioner.evaluation.grounding import grounding_scores
from captioner.evaluation.metrics import (
    corpus_bleu,
    object_accuracy,
    objects_correct,
    sentence_bleu,
)
from captioner.inference.captioner import Caption, Captioner
from captioner.inference.report import REPORT_FILE, ReportItem, run_summary, write_report

ALL_COCO_METRICS = (*COCO_METRICS, "spice")


def predict_records(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    batch_size: int = 64,
    on_error: Callable[[str], None] | None = None,
    features: np.ndarray | None = None,
) -> list[Caption | None]:
    """Captions every record's image with free-running decoding, in record order.

    An image that cannot be read gets None; its error message goes to `on_error`. With
    `features` (the records' cached encoder grids, (N, L, D)) the encoder is skipped.
    """
    if features is not None:
        captions = []
        for start in range(0, len(records), batch_size):
            captions.extend(captioner.caption_features(features[start : start + batch_size]))
        return captions
    images = image_dataset(records, captioner.image_size, on_error=on_error)
    captions: list[Caption | None] = [None] * len(records)
    for indices, batch in images.batch(batch_size).prefetch(2):
        for index, caption in zip(indices.numpy(), captioner.caption(batch.numpy())):
            captions[index] = caption
    return captions


GROUNDING_WORDS = {"first": "_first_word", "phrase": "_phrase"}  # shape: no suffix


def image_sizes(records: Sequence[ImageRecord]) -> list[tuple[int, int]]:
    """``(width, height)`` of every record's original image, read from the file header."""
    sizes = []
    for record in records:
        try:
            with Image.open(record.path) as image:
                sizes.append(image.size)
        except (OSError, ValueError) as error:
            raise ValueError(f"{record.path}: cannot read the image size ({error})") from None
    return sizes


def grounding_metrics(
    records: Sequence[ImageRecord], captions: Sequence[Caption]
) -> tuple[dict, list[list[dict]]]:
    """Pointing accuracy (over the named objects and over all objects) and attention in box
    (0-100) for the shape word, the phrase's first word and the whole phrase (see
    `captioner.evaluation.grounding`), and the shape word's per-image rows.
    """
    args = (
        [c.words for c in captions],
        [c.alphas for c in captions],
        [r.objects for r in records],
        image_sizes(records),
    )
    summary, per_image = grounding_scores(*args, word="shape")
    scores = {k: v for k, v in summary.items() if k not in ("scored", "excluded")}
    scores["grounding_scored_words"] = summary["scored"]
    scores["grounding_excluded_words"] = summary["excluded"]
    for word, suffix in GROUNDING_WORDS.items():
        other, _ = grounding_scores(*args, word=word)
        scores[f"pointing_accuracy{suffix}"] = other["pointing_accuracy"]
        scores[f"pointing_accuracy_all_objects{suffix}"] = other["pointing_accuracy_all_objects"]
        scores[f"attention_in_box{suffix}"] = other["attention_in_box"]
    return scores, per_image


def _has_boxes(records: Sequence[ImageRecord]) -> bool:
    return bool(records) and all(
        r.objects is not None and all("bbox" in o for o in r.objects) for r in records
    )


def score_captions(
    records: Sequence[ImageRecord],
    captions: Sequence[Caption],
    *,
    coco_metrics: Sequence[str] = ALL_COCO_METRICS,
    tokenizer: str = "ptb",
) -> tuple[dict, list[dict]]:
    """Scores free-running captions against the records' references.

    Args:
        records: The evaluated images.
        captions: Their generated captions, in the same order.
        coco_metrics: Which of METEOR, ROUGE-L, CIDEr-D and SPICE to ask pycocoevalcap for.
        tokenizer: Tokenisation for the pycocoevalcap scorers (see `coco_scores`).

    Returns:
        ``(scores, per_image)``: BLEU-1…4 and the asked coco metrics (0–100, None where not
        computed, with the reason under ``not_computed``), object accuracy where the dataset
        lists objects and grounding scores where they have boxes, the attention focus scores
        (`captioner.evaluation.attention_focus`) and the number of distinct captions; per
        image, for error analysis: ``bleu4``, the coco metrics, ``objects_correct``,
        ``pointing_accuracy`` (0–100 over the caption's scored shape words, None if none)
        and ``grounding``.
    """
    if len(records) != len(captions):
        raise ValueError(f"{len(records)} images but {len(captions)} captions")
    hypotheses = [c.words for c in captions]
    references = [r.captions for r in records]
    bleu = corpus_bleu(hypotheses, references)
    scores: dict = {f"bleu{n}": value for n, value in enumerate(bleu, start=1)}
    per_image = [
        {"bleu4": sentence_bleu(hyp, refs)[3]}
        for hyp, refs in zip(hypotheses, references, strict=True)
    ]
    if coco_metrics:
        coco = coco_scores(hypotheses, references, coco_metrics, tokenizer)
        scores.update(coco.scores)
        if coco.unavailable:
            scores["not_computed"] = coco.unavailable
        scores["coco_tokenizer"] = coco.tokenizer
        for metric, values in coco.per_image.items():
            for row, value in zip(per_image, values, strict=True):
                row[metric] = value
    if records and all(r.objects is not None for r in records):
        objects = [r.objects for r in records]
        accuracy = object_accuracy(hypotheses, objects)
        scores["object_accuracy"] = accuracy["overall"]
        scores["object_accuracy_by_count"] = accuracy["by_count"]
        for row, correct in zip(per_image, objects_correct(hypotheses, objects), strict=True):
            row["objects_correct"] = correct
    scores.update(attention_focus_scores(hypotheses, [c.alphas for c in captions]))
    scores["distinct_captions"] = len({" ".join(h) for h in hypotheses})
    if _has_boxes(records):
        grounding, rows = grounding_metrics(records, captions)
        scores.update(grounding)
        for row, mentions in zip(per_image, rows, strict=True):
            hits = [float(m["hit"]) for m in mentions if m["status"] == "matched"]
            row["pointing_accuracy"] = 100.0 * sum(hits) / len(hits) if hits else None
            row["grounding"] = mentions
    return scores, per_image


def evaluate_split(
    captioner: Captioner,
    records: Sequence[ImageRecord],
    *,
    split: str,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    extra: dict | None = None,
    coco_metrics: Sequence[str] = ALL_COCO_METRICS,
    tokenizer: str = "ptb",
    on_error: Callable[[str], None] | None = None,
    features: np.ndarray | None = None,
    report: bool = False,
    run_dir: str | Path | None = None,
) -> dict:
    """Captions a split with free-running decoding and scores it; with `out_dir`, writes
    metrics.json, predictions.json and per_image.jsonl there (and report.html with
    `report`).

    Args:
        captioner: The model to evaluate.
        records: The split's images with their references.
        split: The split's name, recorded in the metrics.
        out_dir: Where to write the output files (None: write nothing).
        batch_size: Images captioned at once.
        features: the records' cached encoder grids (N, L, D), if any; the encoder is
            then skipped.
        extra: More entries for the metrics (e.g. the model and dataset paths).
        coco_metrics: pycocoevalcap metrics to compute (empty: BLEU and grounding only).
        tokenizer: Tokenisation for the pycocoevalcap scorers.
        report: Also write report.html (see `captioner.inference.report`) to `out_dir`.
        run_dir: The model's run directory, whose settings and training curves the report
            shows.

    Images that cannot be read are reported through `on_error`, left out of the scores
    and counted as `num_unreadable_images`.

    Returns:
        the metrics: scores on the 0–100 scale plus split, decoding settings, counts and the
        seconds taken (captioning and scoring).
    """
    started = time.perf_counter()
    all_records = records
    predicted = predict_records(captioner, records, batch_size, on_error, features)
    unreadable = sum(c is None for c in predicted)
    records = [r for r, c in zip(records, predicted) if c is not None]
    captions = [c for c in predicted if c is not None]
    metrics, per_image = score_captions(
        records, captions, coco_metrics=coco_metrics, tokenizer=tokenizer
    )
    metrics.update(
        split=split,
        **captioner.settings,
        num_images=len(records),
        num_references=sum(len(r.captions) for r in records),
        num_unreadable_images=unreadable,
        seconds=round(time.perf_counter() - started, 2),
        **(extra or {}),
    )
    if out_dir is not None:
        write_outputs(Path(out_dir), records, captions, metrics, per_image)
        if report:
            rows = iter(per_image)
            items = [
                report_item(r, c, next(rows) if c is not None else {})
                for r, c in zip(all_records, predicted, strict=True)
            ]
            write_report(
                Path(out_dir) / REPORT_FILE,
                items,
                title=f"{split} split of {metrics.get('dataset') or 'the dataset'}",
                metrics=metrics,
                run=run_summary(run_dir) if run_dir is not None else None,
            )
    return metrics


def report_item(record: ImageRecord, caption: Caption | None, scores: dict) -> ReportItem:
    """One image of the evaluation report: its caption, references and per-image scores
    (a row of `score_captions`); without a caption, the image could not be read."""
    return ReportItem(
        path=record.path,
        caption=caption,
        references=[" ".join(c) for c in record.captions],
        scores={k: v for k, v in scores.items() if k != "grounding"},
        objects=record.objects,
        grounding=scores.get("grounding"),
        error=None if caption is not None else "the image could not be read",
        image_id=record.image_id,
    )


def write_outputs(
    out_dir: Path,
    records: Sequence[ImageRecord],
    captions: Sequence[Caption],
    metrics: dict,
    per_image: Sequence[dict] | None = None,
) -> None:
    """Writes metrics.json, predictions.json (COCO results format) and per_image.jsonl
    (hypothesis, references and the per-image scores of `score_captions`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    predictions = [{"image_id": r.image_id, "caption": c.text} for r, c in zip(records, captions)]
    (out_dir / "predictions.json").write_text(json.dumps(predictions) + "\n", encoding="utf-8")
    with (out_dir / "per_image.jsonl").open("w", encoding="utf-8") as f:
        for index, (record, caption) in enumerate(zip(records, captions, strict=True)):
            row = {
                "image_id": record.image_id,
                "image": str(record.path),
                "hypothesis": caption.text,
                "references": [" ".join(c) for c in record.captions],
                **(per_image[index] if per_image is not None else {}),
            }
            f.write(json.dumps(row) + "\n")
