"""Timing side by side: alternating runs, medians, and one table of results."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the results table."""

    name: str
    figure: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Figure over baseline, when there is a baseline."""
        if not self.baseline:
            return None
        return self.figure / self.baseline


def alternate(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each candidate in turn ``rounds`` times (A B A B ...); return each one's median.

    Each callable returns its own measurement (e.g. messages per second), so set-up
    outside the timed part stays out of the figure. Alternating spreads machine noise
    evenly over the candidates.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            gc.collect()
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def rate(count: int, work: Callable[[], None]) -> float:
    """Run ``work`` once and return ``count`` per second of wall-clock time."""
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def format_table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| benchmark | figure | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        baseline = f"{row.baseline:,.1f} {row.unit} ({row.baseline_name})" if row.baseline else "—"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        verdict = {True: "pass", False: "FAIL", None: "—"}[row.passed]
        note = f" {row.note}" if row.note else ""
        lines.append(
            f"| {row.name} | {row.figure:,.1f} {row.unit} | {baseline} | {ratio} | "
            f"{row.target} | {verdict}{note} |"
        )
    return "\n".join(lines)
