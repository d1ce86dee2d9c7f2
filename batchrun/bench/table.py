"""The bench's table: each figure, its target, the ratio to the target, and notes.

A figure without a target is information (the ratio column stays empty). The ratio is always
measured ÷ target: a "≥" target is met at a ratio of 1 or more, a "≤" target at 1 or less.
A section that failed shows its error in the row of each of its figures; a figure that could
not be measured here (a tool missing) is shown as skipped, with the reason, and is no error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    """What a figure is: its name, unit and target (None: no target)."""

    name: str
    unit: str = ""
    target: float | None = None
    at_most: bool = False
    """The target is a ceiling (≤) rather than a floor (≥)."""

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'≤' if self.at_most else '≥'} {self.target:,g} {self.unit}".rstrip()


@dataclass(frozen=True)
class Figure:
    """One measured figure, or the error that kept it from being measured."""

    spec: Spec
    value: float | None
    note: str = ""
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.spec.target:
            return None
        return self.value / self.spec.target

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.value is None:
            return "skip"
        target = self.spec.target
        if target is None:
            return ""
        met = self.value <= target if self.spec.at_most else self.value >= target
        return "ok" if met else "MISS"


def failed(specs: Sequence[Spec], error: str) -> list[Figure]:
    """The rows of a section that failed: each figure with the error."""
    return [Figure(spec, None, error=error) for spec in specs]


def skipped(specs: Sequence[Spec], reason: str) -> list[Figure]:
    """The rows of figures not measured here: each with the reason."""
    return [Figure(spec, None, note=f"skipped: {reason}") for spec in specs]


def number(value: float, unit: str = "") -> str:
    """A value for the table: thousands separated, two or three significant decimals (none
    for a whole count)."""
    size = abs(value)
    whole = float(value).is_integer() and unit not in ("s", "%")
    if whole or size >= 1000:
        text = f"{value:,.0f}"
    elif size >= 100:
        text = f"{value:.0f}"
    elif size >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}" if size < 1 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


HEADER = ("figure", "measured", "target", "ratio", "", "notes")


def render(figures: Sequence[Figure], notes: Sequence[str]) -> str:
    """The table, then the numbered notes."""
    rows = [HEADER] + [_cells(figure) for figure in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    aligned = []
    for row in rows:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        aligned.append("  ".join([*cells, row[-1]]).rstrip())
    rule = "-" * (sum(widths) + 2 * len(widths) + len(HEADER[-1]))
    return "\n".join([aligned[0], rule, *aligned[1:], rule, *notes])


def _cells(figure: Figure) -> tuple[str, str, str, str, str, str]:
    spec = figure.spec
    measured = "-" if figure.value is None else number(figure.value, spec.unit)
    ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}"
    note = f"error: {figure.error}" if figure.error else figure.note
    return (spec.name, measured, spec.target_text(), ratio, figure.verdict, note)
