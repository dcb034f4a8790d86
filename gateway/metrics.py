"""Prometheus metrics in the text exposition format (a handful of counters and gauges)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

__all__ = ["Metrics"]


class Metrics:
    """Counters kept by the gateway; gauges are read from live state when scraped."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.updates_pushed = 0
        # Phone-upload entries not stored, by app and reason (gateway.phones.SKIP_REASONS),
        # and heartbeats stored at a held position, by app.
        self.phone_skipped: Counter[tuple[str, str]] = Counter()
        self.phone_heartbeats: Counter[str] = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def render(self) -> str:
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
        for name, (help, read) in self.gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
