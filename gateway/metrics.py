"""Prometheus metrics in the text exposition format (a handful of counters and gauges)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

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
        lines = [
            "# HELP herd_gateway_requests_total HTTP requests served, by route and status.",
            "# TYPE herd_gateway_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(
                f'herd_gateway_requests_total{{method="{method}",route="{_escape(route)}",'
                f'status="{status}"}} {n}'
            )
        lines += [
            "# HELP herd_gateway_updates_pushed_total Location updates sent to WebSocket clients.",
            "# TYPE herd_gateway_updates_pushed_total counter",
            f"herd_gateway_updates_pushed_total {self.updates_pushed}",
        ]
        lines += [
            "# HELP herd_gateway_phone_entries_skipped_total Phone-upload entries not stored, "
            "by app and reason.",
            "# TYPE herd_gateway_phone_entries_skipped_total counter",
        ]
        for (app, reason), n in sorted(self.phone_skipped.items()):
            lines.append(
                f'herd_gateway_phone_entries_skipped_total{{app="{app}",reason="{reason}"}} {n}'
            )
        lines += [
            "# HELP herd_gateway_phone_heartbeats_stored_total Heartbeats without a fix stored "
            "at the client's held position, by app.",
            "# TYPE herd_gateway_phone_heartbeats_stored_total counter",
        ]
        for app, n in sorted(self.phone_heartbeats.items()):
            lines.append(f'herd_gateway_phone_heartbeats_stored_total{{app="{app}"}} {n}')
        lines += self._history_lines(followed)
        for name, (help, read) in self.gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"

    def _history_lines(self, followed: tuple[str, dict[str, int]] | None) -> list[str]:
        lines = [
            "# HELP herd_gateway_history_imports_total History files posted, by result: "
            "imported, or refused (400, 408, 413, 415: nothing imported).",
            "# TYPE herd_gateway_history_imports_total counter",
        ]
        for result, n in sorted(self.history_imports.items()):
            lines.append(f'herd_gateway_history_imports_total{{result="{result}"}} {n}')
        lines += [
            "# HELP herd_gateway_history_import_points_total Points of imported files, by "
            "outcome: imported, duplicate (held already, or repeated in the file), not_kept "
            "(answered but not kept: at or before a deletion).",
            "# TYPE herd_gateway_history_import_points_total counter",
        ]
        for outcome, n in sorted(self.history_points.items()):
            lines.append(f'herd_gateway_history_import_points_total{{outcome="{outcome}"}} {n}')
        lines += [
            "# HELP herd_gateway_history_deletions_total History deletions done (DELETE "
            "/api/v1/clients/{id}/history answered 200).",
            "# TYPE herd_gateway_history_deletions_total counter",
            f"herd_gateway_history_deletions_total {self.history_deletions}",
        ]
        if followed is not None:
            server, figures = followed
            for key, (name, help) in HERD_HISTORY.items():
                kind = "counter" if name.endswith("_total") else "gauge"
                lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
                lines.append(f'{name}{{server="{_escape(server)}"}} {figures[key]}')
        return lines


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
