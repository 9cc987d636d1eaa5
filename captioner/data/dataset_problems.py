"""Collecting the problems found in a dataset file, reported as one line per kind with counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

EXAMPLES_SHOWN = 3


class DatasetProblems:
    """Problems of one dataset file, grouped by kind, each with a count and a few examples.

    Args:
        source: the dataset file the problems are in (named at the start of every line).
    """

    def __init__(self, source: str | Path):
        self.source = source
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        """Counts one problem of `kind` (e.g. "empty captions (dropped)") seen at `example`."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_SHOWN:
            shown.append(example)

    def lines(self) -> list[str]:
        """One line per kind: `FILE: COUNT KIND: EXAMPLE, EXAMPLE, EXAMPLE, ...`."""
        lines = []
        for kind, count in self.counts.items():
            examples = ", ".join(self.examples[kind])
            more = ", ..." if count > len(self.examples[kind]) else ""
            lines.append(f"{self.source}: {count} {kind}: {examples}{more}")
        return lines

    def report(self, warn: Callable[[str], None]) -> None:
        """Passes every line to `warn`."""
        for line in self.lines():
            warn(line)
