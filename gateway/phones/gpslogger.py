"""GPSLogger for Android, posting to a custom URL (docs/gateway.md has the template)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .attributes import (
    _measure,
    _put,
)
from .reports import (
    NO_POSITION,
    Entry,
    Skipped,
    _heartbeat,
    _report,
)
from .traccar import (
    _form,
)
from .values import (
    _device,
    _first,
)

# -- GPSLogger ---------------------------------------------------------------------------

# The client ID of a GPSLogger upload that names no device, and no write token does either.
GPSLOGGER_DEVICE = "gpslogger"
# %TIMEOFFSET writes "+02:00" without percent-encoding, so the query arrives with a space.
_SPACE_OFFSET = re.compile(r"(T.*) ([0-9]{2}:?[0-9]{2})$")


def gpslogger(
    query: Mapping[str, str],
    body: bytes,
    now_ns: int,
    *,
    max_future: float | None = None,
    fallback: str = GPSLOGGER_DEVICE,
) -> list[Entry]:
    """The report in a GPSLogger custom-URL request (GET query, or a POST body of
    ``key=value`` pairs, free text and newlines allowed), with Traccar's names (the
    documented template: ``id lat lon timestamp altitude speed bearing accuracy batt``) or
    GPSLogger's and Home Assistant's (``latitude longitude device serial acc alt spd dir
    battery time``). Speed is m/s (``%SPD``). Without lat/lon: a Heartbeat if the request
    names a device, else Skipped. Raises PhoneError(400) for an invalid field.
    """
    params: dict[str, Any] = _form(body.replace(b"\r", b"").replace(b"\n", b"&"))
    params.update(query)
    device = _first(params, ("id", "deviceid", "device", "serial", "androidId"))
    cid, name = _device(fallback if device is None else device)
    attributes: dict[str, object] = {}
    _put(attributes, "accuracy", _measure(_first(params, ("accuracy", "acc")), "accuracy"))
    _put(attributes, "altitude", _measure(_first(params, ("altitude", "alt")), "altitude"))
    _put(attributes, "speed", _measure(_first(params, ("speed", "spd")), "speed"))
    heading = _first(params, ("bearing", "heading", "direction", "dir"))
    _put(attributes, "heading", _measure(heading, "heading"))
    _put(attributes, "battery", _measure(_first(params, ("batt", "battery")), "battery"))
    _put(attributes, "name", name)
    stamp = _first(params, ("timestamp", "time", "epoch", "timeoff"))
    if isinstance(stamp, str):
        stamp = _SPACE_OFFSET.sub(r"\1+\2", stamp)
    lat = _first(params, ("lat", "latitude"))
    lon = _first(params, ("lon", "longitude"))
    if lat is None or lon is None:
        if device is None:
            return [Skipped(NO_POSITION, "no lat/lon and no device")]
        return [_heartbeat(cid, stamp, now_ns, "timestamp", max_future, attributes)]
    names = ("lat", "lon", "timestamp")
    return [
        _report(cid, lat, lon, stamp, now_ns, names, max_future=max_future, attributes=attributes)
    ]
