"""What every workload gets: the sizes, the running herd, the process list, the CPU layout,
and helpers to interleave rounds and turn them into figures."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .herd import Herd
from .procs import Procs, pin
from .results import Figure, Missing, Target, median
from .sizes import Sizes

__all__ = ["Context", "Spec", "interleave", "summarise"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Context:
    sizes: Sizes
    root: Path
    procs: Procs
    herd: Herd
    # The server under test runs on ``server_cpus``, the harness (load generator) on
    # ``load_cpus``; both None when there are not two CPUs to separate them.
    server_cpus: set[int] | None
    load_cpus: set[int] | None
    # Every CPU the harness was allowed at its start.
    all_cpus: set[int]

    def on_server_cpu(self, *pids: int) -> None:
        if self.server_cpus is not None:
            for pid in pids:
                pin(pid, self.server_cpus)

    def on_load_cpu(self, *pids: int) -> None:
        if self.load_cpus is not None:
            for pid in pids:
                pin(pid, self.load_cpus)

    def unpin(self, *pids: int) -> None:
        """Let ``pids`` run on every CPU (a workload with more busy processes than CPUs)."""
        for pid in pids:
            pin(pid, self.all_cpus)

    def pin_harness(self) -> None:
        self.on_load_cpu(os.getpid())


async def interleave(
    targets: Sequence[T],
    rounds: int,
    run: Callable[[T, int], Awaitable[R]],
    pair: tuple[T, T] | None = None,
) -> dict[T, list[R]]:
    """Run ``rounds`` rounds of every target, rotating the order each round (ABC, BCA, CAB:
    with a baseline and the herd, that alternates them), so drift on a shared machine lands
    on every target alike.

    With ``pair`` (the herd and the baseline a target's ratio is taken to), each round runs
    those two first and back to back, in alternating order, then the rest: a ratio of
    paired rounds then compares runs seconds apart.
    """
    results: dict[T, list[R]] = {t: [] for t in targets}
    n = len(targets)
    for r in range(rounds):
        if pair is None:
            order = [*targets[r % n :], *targets[: r % n]]
        else:
            first = list(pair) if r % 2 == 0 else list(reversed(pair))
            order = [*first, *(t for t in targets if t not in pair)]
        for target in order:
            results[target].append(await run(target, r))
    return results


def summarise(
    name: str,
    unit: str,
    herd: Sequence[float] | str,
    baselines: Mapping[str, Sequence[float] | str] | None = None,
    target: Target | None = None,
    **extra: Any,
) -> Figure:
    """A figure from per-round values: the median of the herd's rounds and of each
    baseline's, and the rounds themselves (for the ratios of paired rounds). A string instead
    of values is the reason the figure is missing; so is a median of zero (nothing a figure
    here measures is really zero)."""
    reasons: dict[str, str] = {}

    def med(who: str, values: Sequence[float] | str) -> float | None:
        if isinstance(values, str):
            reasons[who] = values
            return None
        try:
            value = median(values)
        except Missing as exc:
            reasons[who] = str(exc)
            return None
        if value <= 0:
            # CPU time comes in 10 ms clock ticks: a short --quick window may hold none.
            reasons[who] = f"measured {value:g}: below the resolution of the measurement"
            return None
        return value

    value = med("herd", herd)
    base = {b: med(b, v) for b, v in (baselines or {}).items()}
    if reasons:
        extra["missing"] = reasons
    return Figure(
        name=name,
        unit=unit,
        value=value,
        reason=reasons.get("herd"),
        baselines=base,
        target=target,
        rounds=[] if isinstance(herd, str) else [round(v, 6) for v in herd],
        baseline_rounds={
            b: [round(v, 6) for v in values]
            for b, values in (baselines or {}).items()
            if not isinstance(values, str) and base[b] is not None
        },
        extra=extra,
    )


@dataclass(frozen=True)
class Spec:
    """A figure's name, unit and target, known before it is measured (so that a stage of a
    workload that fails can still report each of its figures, as null with the reason)."""

    name: str
    unit: str
    target: Target

    def figure(
        self,
        values: Sequence[float] | str,
        baselines: Mapping[str, Sequence[float] | str] | None = None,
        **extra: Any,
    ) -> Figure:
        return summarise(self.name, self.unit, values, baselines, self.target, **extra)
