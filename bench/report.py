"""The results: a table on stdout and the same figures as JSON, with the machine they came from."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .results import Figure, WorkloadResult

__all__ = ["machine_info", "render_table", "write_json"]

REPO = Path(__file__).resolve().parent.parent


def _run(argv: Sequence[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    node = shutil.which("node")
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "uvloop": _version("uvloop"),
        "aiohttp": _version("aiohttp"),
        "node": _run([node, "--version"]) if node else None,
        # Read-only: which commit of the herd was measured (None outside a git checkout).
        "git_commit": _run(["git", "rev-parse", "HEAD"], cwd=REPO),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "null"
    if unit == "ms" or abs(value) < 10:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{value:,.0f}"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def render_table(results: Sequence[WorkloadResult]) -> str:
    """Every figure: the herd's value, each baseline and its ratio, the target and verdict."""
    header = ["figure", "unit", "herd", "baseline", "ratio", "target", "result"]
    rows: list[list[str]] = []
    sections: list[tuple[str, list[list[str]], list[str]]] = []
    for workload in results:
        rows = []
        for figure in workload.figures:
            rows.extend(_figure_rows(figure))
        notes = list(workload.notes)
        if workload.error:
            notes.insert(0, f"ERROR: {workload.error}")
        sections.append(
            (f"{workload.name}: {workload.title} ({workload.seconds:.0f} s)", rows, notes)
        )
    all_rows = [header] + [r for _, rows, _ in sections for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    widths[0] = min(widths[0], 62)
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    for title, rows, notes in sections:
        lines.append("")
        lines.append(f"== {title}")
        lines.extend(_row(r, widths) for r in rows)
        lines.extend(f"   note: {n}" for n in notes)
    return "\n".join(lines)


def _figure_rows(figure: Figure) -> list[list[str]]:
    verdict = {True: "PASS", False: "FAIL", None: ""}[figure.passed]
    if figure.target is not None and figure.passed is None:
        verdict = "n/a"
    herd = _num(figure.value, figure.unit)
    target = figure.target.text if figure.target else ""
    baselines = list(figure.baselines.items()) or [("", None)]
    rows = []
    for i, (name, value) in enumerate(baselines):
        base = f"{name} {_num(value, figure.unit)}" if name else ""
        ratio = figure.ratio_to(name) if name else None
        cells = [
            figure.name if i == 0 else "",
            figure.unit if i == 0 else "",
            herd if i == 0 else "",
            base,
            "" if ratio is None else f"{ratio:.2f}",
            target if i == 0 else "",
            verdict if i == 0 else "",
        ]
        rows.append(cells)
    if figure.value is None:
        rows.append([f"   null: {figure.reason}", "", "", "", "", "", ""])
    return rows
