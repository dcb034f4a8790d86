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
        for name, (help, read) in self.gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
