"""Markdown tables of docs/results.md, made from run directories instead of copied by hand.

    python tools/results_tables.py scores [--columns C,...] LABEL=EVAL_DIR ...
        one row per evaluation folder (`captioner evaluate --out EVAL_DIR`, metrics.json);
    python tools/results_tables.py curves RUN_DIR [--keys K,...]
        validation scores per epoch from a run's history.json, one row per key.

Columns: any metrics.json key (printed with two decimals), and the composites
`by_count` (object accuracy in scenes of 1 / 2 / 3 objects) and `pointing` (shape-word
pointing accuracy with its chance level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCORE_COLUMNS = "decoding,bleu1,bleu2,bleu3,bleu4,meteor,rouge_l,cider"
HEADERS = {
    "decoding": "decoding",
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr-D",
    "object_accuracy": "object acc.",
    "by_count": "1 / 2 / 3 objects",
    "pointing": "pointing (chance)",
    "pointing_accuracy_all_objects": "pointing, all objects",
}


def cell(metrics: dict, column: str) -> str:
    if column == "decoding":
        beam = metrics.get("beam_size", 1)
        return "greedy" if beam == 1 else f"beam {beam}"
    if column == "by_count":
        counts = metrics.get("object_accuracy_by_count") or {}
        return " / ".join(f"{counts[k]:.1f}" for k in sorted(counts))
    if column == "pointing":
        return f"{metrics['pointing_accuracy']:.1f} ({metrics['pointing_chance']:.1f})"
    value = metrics.get(column)
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scores_table(entries: list[str], columns: list[str]) -> str:
    rows = []
    for entry in entries:
        label, _, folder = entry.rpartition("=")
        metrics = json.loads((Path(folder) / "metrics.json").read_text("utf-8"))
        rows.append([label or folder, *(cell(metrics, c) for c in columns)])
    return markdown(["model", *(HEADERS.get(c, c) for c in columns)], rows)


def curves_table(run_dir: Path, keys: list[str]) -> str:
    history = json.loads((run_dir / "history.json").read_text("utf-8"))
    header = ["epoch", *(str(row["epoch"]) for row in history)]
    rows = [[key, *(cell(row, key) for row in history)] for key in keys]
    return markdown(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scores = commands.add_parser("scores")
    scores.add_argument("entries", nargs="+", help="LABEL=EVAL_DIR")
    scores.add_argument("--columns", default=SCORE_COLUMNS)
    curves = commands.add_parser("curves")
    curves.add_argument("run_dir", type=Path)
    curves.add_argument("--keys", default="val_bleu4,val_cider")
    args = parser.parse_args()
    if args.command == "scores":
        print(scores_table(args.entries, args.columns.split(",")))
    else:
        print(curves_table(args.run_dir, args.keys.split(",")))


if __name__ == "__main__":
    main()
