"""Figures: one measured number with its baselines, ratio and target, or null with a reason."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "Missing", "Target", "WorkloadResult", "median", "percentile"]


class Missing(Exception):
    """A figure cannot be measured; the message says why (it is reported as null)."""


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by the nearest-rank method; raises Missing if empty."""
    if not samples:
        raise Missing("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        raise Missing("no rounds")
    return float(statistics.median(values))


@dataclass(frozen=True)
class Target:
    """A goal from the issue: ``check`` says whether a value (or ratio) meets it."""

    text: str  # as printed, e.g. "ratio >= 0.5"
    on: str  # "value" or "ratio": what the check is applied to
    check: Callable[[float], bool]


@dataclass
class Figure:
    """One measured number of a workload.

    ``value`` is the herd's figure (the median of its rounds), ``baselines`` the same figure
    for each baseline, measured in the same run interleaved with the herd. ``ratio`` is to the
    first baseline (the one the target names): the median of the per-round ratios, herd
    round r over baseline round r (run back to back, so a slow spell of the shared machine
    lands on both sides of a ratio), or value / baseline when the rounds do not pair up. A
    figure that could not be measured has ``value`` None and a ``reason``.
    """

    name: str
    unit: str
    value: float | None
    reason: str | None = None
    baselines: dict[str, float | None] = field(default_factory=dict)
    target: Target | None = None
    rounds: list[float] = field(default_factory=list)
    baseline_rounds: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> tuple[str, float | None] | None:
        return next(iter(self.baselines.items()), None)

    def ratio_to(self, baseline: str) -> float | None:
        base = self.baselines.get(baseline)
        if self.value is None or base is None or base == 0:
            return None
        paired = self.baseline_rounds.get(baseline, [])
        if paired and len(paired) == len(self.rounds) and all(paired):
            return median([h / b for h, b in zip(self.rounds, paired, strict=True)])
        return self.value / base

    @property
    def ratio(self) -> float | None:
        first = self.baseline
        return None if first is None else self.ratio_to(first[0])

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        subject = self.ratio if self.target.on == "ratio" else self.value
        return None if subject is None else self.target.check(subject)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "value": self.value,
            "reason": self.reason,
            "baselines": self.baselines,
            "ratios": {name: self.ratio_to(name) for name in self.baselines},
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.text,
            "target_on": None if self.target is None else self.target.on,
            "pass": self.passed,
            "rounds": self.rounds,
            "baseline_rounds": self.baseline_rounds,
            "extra": self.extra,
        }


@dataclass
class WorkloadResult:
    """Every figure of one workload, plus notes (what was run, anything unusual)."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "notes": self.notes,
            "figures": [f.to_json() for f in self.figures],
        }
