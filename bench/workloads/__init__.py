"""The workloads, in the order they run.

Each module has ``NAME`` (for ``--only``), ``TITLE`` and ``async run(ctx) -> WorkloadResult``.
The map runs first, on a herd that holds no client yet (its page shows every client the
herd holds); convergence runs last: it fills every server with 100,000 clients. History runs
servers of its own (a lone one on a database it writes, a herd it cuts in two).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType

from ..context import Context
from ..results import WorkloadResult
from . import convergence, flood, gateway, history, iamat, livemap, whatsat

__all__ = ["WORKLOADS", "Workload"]

Workload = Callable[[Context], Awaitable[WorkloadResult]]

_MODULES: tuple[ModuleType, ...] = (
    livemap,
    iamat,
    flood,
    whatsat,
    gateway,
    history,
    convergence,
)
WORKLOADS: dict[str, tuple[str, Workload]] = {m.NAME: (m.TITLE, m.run) for m in _MODULES}
