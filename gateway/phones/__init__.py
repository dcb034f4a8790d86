"""Phone-app location uploads turned into herd reports, with no I/O: one module per app
(owntracks, traccar, gpslogger, overland) over what they share (values, attributes, reports).

The gateway hands this module what an HTTP request carried (body bytes, headers, query) and
gets back a list of :class:`Report`, each ready to send as one ``IAMAT`` line, or a
:class:`PhoneError` whose ``status`` and ``message`` it answers with. The wire formats are
those of ``shared/reference/phone-apps.md``.

Client IDs, per format (device names mapped by :func:`device_client_id`: ``%`` and white
space percent-encoded, the name as sent kept in the ``name`` attribute; always checked
against the herd's rule, ``gateway.rules.client_id_problem``):

- **OwnTracks** (HTTP mode): ``owntracks/<user>/<device>``. Like OwnTracks Recorder, user and
  device come from the ``X-Limit-U`` / ``X-Limit-D`` headers, else the ``u`` / ``d`` query
  parameters, else default to ``owntracks`` / ``phone``, and are lower-cased. Only when
  none of those four is given, a body ``topic`` of the form ``owntracks/<user>/<device>``
  (a transition's ``/event`` suffix dropped) is used, not lower-cased.
- **Traccar / OsmAnd**: the ``id`` parameter, else ``deviceid``; in JSON also ``device_id``
  (generation B puts it there). A JSON integer ID is written in decimal.
- **GPSLogger**: ``id``, ``deviceid``, ``device``, ``serial`` or ``androidId``, else a fallback.
- **Overland**: each feature's ``properties.device_id``, else the ``device_id`` query
  parameter (an empty ``device_id`` counts as absent), else a fallback.

Times become POSIX seconds as protocol text, computed exactly (``decimal``, never a float
made from text): numbers are seconds, or milliseconds from 2**31 - 1 up (Traccar's rule);
ISO 8601 date-times keep their fraction; a naive date-time is UTC; a missing time is "now".

A parser returns entries: a :class:`Report`, a :class:`Heartbeat` (no fix: the gateway places
it at the client's held position) or, in a batch, a :class:`Skipped` entry for one that
cannot be stored, so that one bad entry never fails the batch. Reports carry the attributes
of docs/gateway.md ("Phone apps") in fixed units, bounded.
"""

from __future__ import annotations

from ..rules import MAX_BATCH, MAX_CLIENT_ID
from .attributes import (
    API_FLAGS,
    API_LISTS,
    API_NUMBERS,
    API_TEXTS,
    ATTRIBUTE_RANGES,
    KMH,
    KNOT,
    MAX_ATTRIBUTE_ITEMS,
    PER_UNIT,
    api_attributes,
    fit_attributes,
)
from .gpslogger import (
    GPSLOGGER_DEVICE,
    gpslogger,
)
from .overland import (
    OVERLAND_DEVICE,
    overland,
)
from .owntracks import (
    ENCRYPTED,
    owntracks,
)
from .reports import (
    FUTURE,
    HEARTBEAT_NO_POSITION,
    HEARTBEAT_NOT_NEWER,
    INVALID,
    NO_POSITION,
    REFUSED,
    SKIP_REASONS,
    Entry,
    Heartbeat,
    Report,
    Skipped,
    iso6709,
    report,
)
from .traccar import (
    traccar,
    traccar_query,
)
from .values import (
    MAX_ATTRIBUTE_CHARS,
    MAX_FORM_FIELDS,
    MAX_JSON_DEPTH,
    MAX_TIME,
    MAX_TIME_DECIMALS,
    MS_THRESHOLD,
    PhoneError,
    check_client_id,
    device_client_id,
    load_json,
    parse_time,
)

__all__ = [
    "API_FLAGS",
    "API_LISTS",
    "API_NUMBERS",
    "API_TEXTS",
    "ATTRIBUTE_RANGES",
    "ENCRYPTED",
    "FUTURE",
    "GPSLOGGER_DEVICE",
    "HEARTBEAT_NOT_NEWER",
    "HEARTBEAT_NO_POSITION",
    "INVALID",
    "KMH",
    "KNOT",
    "MAX_ATTRIBUTE_CHARS",
    "MAX_ATTRIBUTE_ITEMS",
    "MAX_BATCH",
    "MAX_CLIENT_ID",
    "MAX_FORM_FIELDS",
    "MAX_JSON_DEPTH",
    "MAX_TIME",
    "MAX_TIME_DECIMALS",
    "MS_THRESHOLD",
    "NO_POSITION",
    "OVERLAND_DEVICE",
    "PER_UNIT",
    "REFUSED",
    "SKIP_REASONS",
    "Entry",
    "Heartbeat",
    "PhoneError",
    "Report",
    "Skipped",
    "api_attributes",
    "check_client_id",
    "device_client_id",
    "fit_attributes",
    "gpslogger",
    "iso6709",
    "load_json",
    "overland",
    "owntracks",
    "parse_time",
    "report",
    "traccar",
    "traccar_query",
]
