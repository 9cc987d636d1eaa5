"""Inference: the captioner, greedy and beam search, captioning files, export, attention maps."""
