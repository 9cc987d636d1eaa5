"""Evaluation: BLEU, the coco-caption metrics, attention grounding, scoring a split."""
