"""How the gateway shows a herd record in JSON (REST answers and WebSocket messages)."""

from __future__ import annotations

from typing import Any

from backend.protocol import Record

__all__ = ["record_json"]


def record_json(record: Record) -> dict[str, Any]:
    """A herd record as the API shows it; ``at`` is the exact AT line."""
    lat, lon = record.lat_lng
    return {
        "client_id": record.client_id,
        "lat": lat,
        "lon": lon,
        "location": record.location,
        "client_time": record.client_time,
        "time": float(record.client_time),
        "server": record.server_id,
        "time_diff": record.time_diff,
        "at": record.line.decode(),
    }
