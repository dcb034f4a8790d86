"""Prometheus metrics in the text exposition format (a handful of counters and gauges)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

__all__ = ["HERD_HISTORY", "IMPORT_RESULTS", "POINT_OUTCOMES", "Metrics", "herd_history"]


class Metrics:
    """Counters kept by the gateway; gauges are read from live state when scraped."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.updates_pushed = 0
        # Phone-upload entries not stored, by app and reason (gateway.phones.SKIP_REASONS),
        # and heartbeats stored at a held position, by app.
        self.phone_skipped: Counter[tuple[str, str]] = Counter()
        self.phone_heartbeats: Counter[str] = Counter()
        # History writes (docs/history.md, "Writing history"): files posted by result, their
        # points by outcome, deletions done.
        self.history_imports: Counter[str] = Counter({r: 0 for r in IMPORT_RESULTS})
        self.history_points: Counter[str] = Counter({o: 0 for o in POINT_OUTCOMES})
        self.history_deletions = 0
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def render(self, followed: tuple[str, dict[str, int]] | None = None) -> str:
        """The metrics as Prometheus text; ``followed``: the name of the server the gateway
        follows and its STATUS ``history`` figures (``herd_history``), when it has them."""
        requests = (
            (f'method="{method}",route="{_escape(route)}",status="{status}"', n)
            for (method, route, status), n in sorted(self.requests.items())
        )
        skipped = (
            (f'app="{app}",reason="{reason}"', n)
            for (app, reason), n in sorted(self.phone_skipped.items())
        )
        heartbeats = ((f'app="{app}"', n) for app, n in sorted(self.phone_heartbeats.items()))
        lines = [
            *_family("herd_gateway_requests_total", REQUESTS_HELP, requests),
            *_family("herd_gateway_updates_pushed_total", PUSHED_HELP, [("", self.updates_pushed)]),
            *_family("herd_gateway_phone_entries_skipped_total", SKIPPED_HELP, skipped),
            *_family("herd_gateway_phone_heartbeats_stored_total", HEARTBEATS_HELP, heartbeats),
            *self._history_lines(followed),
        ]
        for name, (help, read) in self.gauges.items():
            lines += _family(name, help, [("", read())])
        return "\n".join(lines) + "\n"

    def _history_lines(self, followed: tuple[str, dict[str, int]] | None) -> list[str]:
        imports = ((f'result="{r}"', n) for r, n in sorted(self.history_imports.items()))
        points = ((f'outcome="{o}"', n) for o, n in sorted(self.history_points.items()))
        deletions = [("", self.history_deletions)]
        lines = [
            *_family("herd_gateway_history_imports_total", IMPORTS_HELP, imports),
            *_family("herd_gateway_history_import_points_total", IMPORT_POINTS_HELP, points),
            *_family("herd_gateway_history_deletions_total", DELETIONS_HELP, deletions),
        ]
        if followed is not None:
            server, figures = followed
            label = f'server="{_escape(server)}"'
            for key, (name, help) in HERD_HISTORY.items():
                lines += _family(name, help, [(label, figures[key])])
        return lines


def _family(name: str, help: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    """One metric's HELP and TYPE lines and its samples, each ``(labels, value)``; a name
    ending ``_total`` is a counter."""
    kind = "counter" if name.endswith("_total") else "gauge"
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        # Counts exactly; a float gauge in the shortest form.
        text = str(value) if isinstance(value, int) else f"{value:g}"
        lines.append(f"{name}{{{labels}}} {text}" if labels else f"{name} {text}")
    return lines


REQUESTS_HELP = "HTTP requests served, by route and status."
PUSHED_HELP = "Location updates sent to WebSocket clients."
SKIPPED_HELP = "Phone-upload entries not stored, by app and reason."
HEARTBEATS_HELP = "Heartbeats without a fix stored at the client's held position, by app."
IMPORTS_HELP = (
    "History files posted, by result: imported, or refused (400, 408, 413, 415: nothing imported)."
)
IMPORT_POINTS_HELP = (
    "Points of imported files, by outcome: imported, duplicate (held already, or repeated in "
    "the file), not_kept (answered but not kept: at or before a deletion)."
)
DELETIONS_HELP = "History deletions done (DELETE /api/v1/clients/{id}/history answered 200)."


# What a posted history file became, and what became of its points.
IMPORT_RESULTS = ("imported", "refused")
POINT_OUTCOMES = ("imported", "duplicate", "not_kept")
# STATUS's "history" object (each server's own figures): key -> metric name and help.
HERD_HISTORY = {
    "points": ("herd_history_points", "Points in history on the server the gateway follows."),
    "late": (
        "herd_history_late_total",
        "Late points (older than their client's newest record) kept since that server started.",
    ),
    "deletions": (
        "herd_history_deletions_total",
        "History deletions applied by that server since it started.",
    ),
    "bytes": ("herd_history_bytes", "Bytes of that server's history database on disk."),
}


def herd_history(status: Mapping[str, object] | None) -> dict[str, int] | None:
    """STATUS's ``history`` figures, or None when a server has none (history off, or an
    older server) or they are not whole numbers."""
    figures = (status or {}).get("history")
    if not isinstance(figures, Mapping):
        return None
    kept: dict[str, int] = {}
    for key in HERD_HISTORY:
        value = figures.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return None
        kept[key] = value
    return kept


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
