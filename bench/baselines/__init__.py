"""The baselines: servers that do the least possible work on the herd's traffic.

Each is a standalone script started as its own process (``python echo.py``, ``node echo.js``,
``python relay.py``, ``python fanout.py``) that prints its port on stdout once it listens.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..procs import Proc, Procs

__all__ = ["BASELINES", "node_baseline", "python_baseline", "start_baseline"]

BASELINES = Path(__file__).resolve().parent


def start_baseline(procs: Procs, name: str, argv: Sequence[str]) -> tuple[Proc, int]:
    """Start a baseline script and return it with the port it printed."""
    proc = procs.start(name, argv, pipe=True)
    return proc, proc.read_port()


def python_baseline(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BASELINES / script), *args]


def node_baseline(*args: str) -> list[str] | None:
    """The argv of the Node.js echo baseline, or None when ``node`` is not installed."""
    node = shutil.which("node")
    return None if node is None else [node, str(BASELINES / "echo.js"), *args]
