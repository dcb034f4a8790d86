"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json`` and shown by
Swagger UI at ``/api/docs``.

Built from the rules the handlers apply (``gateway.rules``: client IDs, radius, bound, pages,
batches; ``gateway.phones``: coordinates, times, attributes; ``gateway.records``: a record's
keys), so the document cannot drift from them; the contract test (schemathesis) checks that
every documented operation answers as documented.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from backend.protocol import MAX_TIME_S

from . import rules
from .phones import (
    API_FLAGS,
    API_LISTS,
    API_NUMBERS,
    API_TEXTS,
    ATTRIBUTE_RANGES,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTE_ITEMS,
    MS_THRESHOLD,
)
from .records import RECORD_KEYS

__all__ = ["SPEC", "spec_at"]

Schema = dict[str, Any]

# The latest time accepted, in milliseconds: the end of the year 9999.
MAX_TIME_MS = MAX_TIME_S * 1000 + 999


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Schema, required: tuple[str, ...] | None = None, **more: Any) -> Schema:
    """An object schema; every property required unless ``required`` says which."""
    needed = list(properties) if required is None else list(required)
    return {"type": "object", "required": needed, "properties": properties, **more}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


def _text(description: str) -> Schema:
    return {"type": "string", "description": description}


def _whole(whole: rules.WholeRange) -> Schema:
    bounds = {"minimum": whole.low} | ({} if whole.high is None else {"maximum": whole.high})
    return {"type": "integer", "default": whole.default, **bounds}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "schema": schema}


CLIENT_ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": rules.MAX_CLIENT_ID,
    "pattern": rules.CLIENT_ID_PATTERN,
}
CLIENT_ID = {
    "name": "client_id",
    "in": "path",
    "required": True,
    "description": "The client's ID: any text with no white space.",
    "schema": CLIENT_ID_SCHEMA,
}

TIME = {
    "description": "When the client was there: POSIX seconds as a number or as decimal "
    f"text ({MS_THRESHOLD} and above are milliseconds, as Traccar sends them); ISO 8601 text "
    "such as 2025-06-15T13:45:12.862Z is accepted too. Absent, null or empty: the "
    "gateway's clock. Newer times win. A time more than the herd's max_future "
    "(600 s by default) ahead of the gateway's clock, or after 9999, is refused (400).",
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_TIME_MS},
        # Text up to 1699999999.999999999 (2023): always in the past, so always taken.
        {"type": "string", "pattern": "^(([0-9]{1,9}|1[0-6][0-9]{8})([.][0-9]{1,9})?)?$"},
        {"type": "null"},
    ],
}

REPORT = _object(
    {
        "client_id": CLIENT_ID_SCHEMA,
        "lat": {"type": "number", "minimum": -rules.MAX_LAT, "maximum": rules.MAX_LAT},
        "lon": {"type": "number", "minimum": -rules.MAX_LON, "maximum": rules.MAX_LON},
        "time": TIME,
        "attributes": {"anyOf": [_ref("ReportAttributes"), {"type": "null"}]},
    },
    required=("client_id", "lat", "lon"),
)

_LABEL = {"type": "string", "minLength": 1, "maxLength": MAX_ATTRIBUTE_CHARS}


def _report_attributes() -> Schema:
    """What a report may carry besides its position: the kept set, each checked (400 past
    its range or length, or for a key not in the set); built from the parser's own limits."""
    properties: Schema = {}
    for key in API_NUMBERS:
        low, high = ATTRIBUTE_RANGES[key]
        properties[key] = {"type": "number", "minimum": low, "maximum": high}
    properties |= {key: _LABEL for key in API_TEXTS}
    properties |= {
        key: {"type": "array", "maxItems": MAX_ATTRIBUTE_ITEMS, "items": _LABEL}
        for key in API_LISTS
    }
    properties |= {key: {"type": "boolean"} for key in API_FLAGS}
    properties["transition"] = _object(
        {
            "event": {"enum": ["enter", "leave"]},
            "region": {"type": "string", "maxLength": MAX_ATTRIBUTE_CHARS},
        },
        required=("event",),
        additionalProperties=False,
    )
    return {
        "type": "object",
        "description": "Attributes to keep with the point (docs/gateway.md, the phone table's "
        "units): accuracy, altitude (m), speed (m/s), heading (degrees), battery (%), ...",
        "additionalProperties": False,
        "properties": properties,
    }


_LIST = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ATTRIBUTE_ITEMS}
ATTRIBUTES = {
    "type": "object",
    "description": "What the phone said besides the position (docs/gateway.md, "
    '"Phone apps"); a key is present only when the report carried a real value. Other keys '
    "may appear: clients should ignore those they do not know.",
    "properties": {
        "accuracy": {"type": "number", "description": "metres"},
        "altitude": {"type": "number", "description": "metres"},
        "speed": {"type": "number", "description": "metres per second"},
        "heading": {"type": "number", "description": "degrees, 0 <= heading < 360"},
        "battery": {"type": "number", "description": "percent, 0 to 100"},
        "charging": {"type": "boolean"},
        "trigger": _text("what made the app report (OwnTracks t)"),
        "event": _text("an app-defined event (Traccar event)"),
        "alarm": _text("Traccar alarm, e.g. sos"),
        "name": _text("the device name as the phone sent it"),
        "transition": _object(
            {"event": {"enum": ["enter", "leave"]}, "region": {"type": "string"}},
            required=("event",),
        ),
        "motion": _LIST,
        "regions": _LIST,
        "heartbeat": {
            "type": "boolean",
            "description": "true: a report without a fix, placed at the previous position",
        },
    },
}

RESULT = _object(
    {
        "stored": {"type": "boolean"},
        "status": {"type": "integer", "description": "200, or 429: the herd refused it"},
        "message": {"type": "string"},
    },
    required=("stored", "status"),
    description="What became of one report of a batch.",
)

_UNPARSED = "null if location does not parse"
_RECORD_FIELDS: Schema = {
    "client_id": {"type": "string"},
    "lat": {"type": ["number", "null"], "description": _UNPARSED},
    "lon": {"type": ["number", "null"], "description": _UNPARSED},
    "location": _text("ISO 6709, as sent in IAMAT"),
    "client_time": _text("POSIX seconds, verbatim"),
    "time": {
        "type": ["number", "null"],
        "description": "client_time as a number; null past the year 9999 (a record from "
        "a server older than the herd's time bound)",
    },
    "server": _text("the herd server that received the report"),
    "time_diff": _text("receive time minus client time"),
    "at": _text("the herd's AT line, byte for byte"),
    "attributes": ATTRIBUTES,
}
# Every key records.record_json writes, in its order, each described above.
assert tuple(_RECORD_FIELDS) == RECORD_KEYS, "describe each key of records.record_json"
RECORD = _object(_RECORD_FIELDS, description="A client's newest location as the herd holds it.")

PLACES = _object(
    {
        "html_attributions": {"type": "array", "items": {"type": "string"}},
        "results": {"type": "array", "items": {"type": "object"}},
        "status": {"type": "string"},
        "error_message": {"type": "string"},
    },
    required=("html_attributions", "results", "status"),
    description="Google Places Nearby Search (legacy) JSON.",
)

SERVER_STATUS = _object(
    {
        "name": {"type": "string"},
        "host": {"type": "string"},
        "port": {"type": "integer"},
        "up": {"type": "boolean"},
        "records": {"type": ["integer", "null"]},
        "places": {"type": ["string", "null"]},
        "links": {"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
    }
)

ERROR = _object({"error": _object({"status": {"type": "integer"}, "message": {"type": "string"}})})

# Answers any operation may give. 401 and 403 (tokens) only when tokens are configured (see
# docs/security.md); rate limits answer 429 wherever they are on.
GUARDED = {
    "401": _error(
        "A token is needed (tokens are configured) and none or an unknown one was given."
    ),
    "403": _error(
        "The token does not allow this: a read token writing, or a device token "
        "reporting for another client ID. Also, with or without tokens: a report or WebSocket "
        "upgrade that a browser marks as cross-site (Origin, Sec-Fetch-Site)."
    ),
    "421": _error("The Host header is not one of [gateway] allowed_hosts."),
    "429": {
        **_error(
            "Too many requests for this client ID or address, or the herd refused a report "
            "over its own budget; retry later."
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    },
}
UNAVAILABLE = {"503": _error("No herd server answered.")}
NOT_KNOWN = {"404": _error("No location is known for this client.")}


def _operation(operation_id: str, summary: str, responses: Schema, **more: Any) -> Schema:
    """An operation whose responses, GUARDED's included, are listed by status code."""
    every = {**GUARDED, **responses}
    return {
        "operationId": operation_id,
        "summary": summary,
        **more,
        "responses": {status: every[status] for status in sorted(every)},
    }


def _batch(items: Schema) -> Schema:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": rules.MAX_BATCH}


REPORTED = {
    "oneOf": [
        _object({"record": _ref("Record")}),
        _object(
            {
                "records": {
                    "type": "array",
                    "items": {"oneOf": [_ref("Record"), {"type": "null"}]},
                },
                "results": {"type": "array", "items": RESULT},
            }
        ),
    ]
}

POST_LOCATIONS = _operation(
    "reportLocations",
    "Report a location (IAMAT), or a batch of them",
    {
        "200": _json(
            REPORTED,
            "The record the herd made of each report, in order; in a batch, null for a report "
            "the herd refused (a budget), and each report's result. 429 when it refused "
            "every one.",
        ),
        "400": _error("The body is not a valid report or batch."),
        "413": _error("The body is larger than the gateway accepts."),
        **UNAVAILABLE,
    },
    requestBody={
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ref("Report"),
                        _batch(_ref("Report")),
                        _object({"locations": _batch(_ref("Report"))}),
                    ]
                }
            }
        },
    },
)

CLIENT_PAGE = _object(
    {
        "clients": {"type": "array", "items": _ref("Record")},
        "total": {"type": "integer"},
        "offset": {"type": "integer"},
        "limit": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
    }
)

HERD = _object(
    {
        "servers": {"type": "array", "items": _ref("ServerStatus")},
        "links": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        },
        "subscribed_to": {"type": ["string", "null"]},
    }
)

RADIUS = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": int(rules.MAX_RADIUS_KM),
    "default": rules.DEFAULT_RADIUS_KM,
}

PATHS = {
    "/api/v1/locations": {"post": POST_LOCATIONS},
    "/api/v1/clients": {
        "get": _operation(
            "listClients",
            "Every known client's location, paged by client ID",
            {
                "200": _json(CLIENT_PAGE, "One page of clients."),
                "400": _error("offset or limit out of range."),
                **UNAVAILABLE,
            },
            parameters=[
                _query("offset", _whole(rules.OFFSET)),
                _query("limit", _whole(rules.PAGE)),
            ],
        )
    },
    "/api/v1/clients/{client_id}": {
        "get": _operation(
            "getClient",
            "A client's current location (WHEREIS)",
            {
                "200": _json(_object({"record": _ref("Record")}), "The client's record."),
                "400": _error("The client ID is not valid."),
                **NOT_KNOWN,
                **UNAVAILABLE,
            },
            parameters=[CLIENT_ID],
        )
    },
    "/api/v1/clients/{client_id}/nearby": {
        "get": _operation(
            "getNearby",
            "Places near a client (WHATSAT)",
            {
                "200": _json(
                    _object({"record": _ref("Record"), "places": _ref("Places")}),
                    "The client's record and the places near it, nearest first.",
                ),
                "400": _error("radius_km or limit out of range, or a bad client ID."),
                **NOT_KNOWN,
                **UNAVAILABLE,
            },
            parameters=[
                CLIENT_ID,
                _query("radius_km", RADIUS),
                _query("limit", _whole(rules.BOUND)),
            ],
        )
    },
    "/api/v1/herd": {
        "get": _operation(
            "herdStatus",
            "Every herd server, up or down, its links and record count",
            {"200": _json(HERD, "The herd as the gateway sees it.")},
        )
    },
}

SPEC: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "herd gateway",
        "version": "1.0.0",
        "description": "Report and read client locations held by the herd, and find places "
        "near a client. Live updates: the WebSocket /api/v1/ws (see docs/gateway.md).",
    },
    "paths": PATHS,
    "security": [{}, {"bearer": []}, {"token": []}],
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "token": {"type": "apiKey", "in": "query", "name": "token"},
        },
        "schemas": {
            "Report": REPORT,
            "Record": RECORD,
            "ReportAttributes": _report_attributes(),
            "Places": PLACES,
            "ServerStatus": SERVER_STATUS,
            "Error": ERROR,
        },
    },
}


def spec_at(now_s: float, max_future: float, bodies: str = "") -> Schema:
    """SPEC with a report's numeric time bounded as of ``now_s``: seconds up to ``now_s +
    max_future``, or milliseconds (from MS_THRESHOLD) up to the same instant, and never past
    the year 9999. Every time it allows is accepted later too (the bound only grows); a time
    just past it may be accepted a moment later. ``bodies``: the configured body limits in
    words (``rules.body_limits``), added to the description."""
    spec = copy.deepcopy(SPEC)
    latest = min(math.floor(now_s + max_future), MAX_TIME_S)
    time_schema = spec["components"]["schemas"]["Report"]["properties"]["time"]
    time_schema["anyOf"] = [
        {"type": "number", "minimum": 0, "maximum": min(latest, MS_THRESHOLD - 1)},
        {"type": "number", "minimum": MS_THRESHOLD, "maximum": latest * 1000},
        *time_schema["anyOf"][1:],
    ]
    if bodies:
        spec["info"]["description"] += " " + bodies
    return spec
