"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

Written by hand next to the handlers in ``api.py``; the contract test (schemathesis) checks
that every documented operation answers as documented.
"""

from __future__ import annotations

import copy
import math
from typing import Any

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

__all__ = ["SPEC", "spec_at"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


# The latest time accepted, in milliseconds: the end of the year 9999.
MAX_TIME_MS = 253402300799999

CLIENT_ID = {
    "name": "client_id",
    "in": "path",
    "required": True,
    "description": "The client's ID: any text with no white space.",
    # No white space in the protocol's sense: space, tab, CR, LF, VT, FF (other spaces are fine).
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "pattern": "^[^ \t\r\n\u000b\u000c]+$",
    },
}

REPORT = {
    "type": "object",
    "required": ["client_id", "lat", "lon"],
    "properties": {
        "client_id": CLIENT_ID["schema"],
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "time": {
            "description": "When the client was there: POSIX seconds as a number or as decimal "
            "text (2147483647 and above are milliseconds, as Traccar sends them); ISO 8601 text "
            "such as 2025-06-15T13:45:12.862Z is accepted too. Absent, null or empty: the "
            "gateway's clock. Newer times win. A time more than the herd's max_future "
            "(600 s by default) ahead of the gateway's clock, or after 9999, is refused (400).",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_TIME_MS},
                # Text up to 1699999999.999999999 (2023): always in the past, so always taken.
                {"type": "string", "pattern": "^(([0-9]{1,9}|1[0-6][0-9]{8})([.][0-9]{1,9})?)?$"},
                {"type": "null"},
            ],
        },
        "attributes": {
            "anyOf": [{"$ref": "#/components/schemas/ReportAttributes"}, {"type": "null"}]
        },
    },
}


def _report_attributes() -> dict[str, Any]:
    """What a report may carry besides its position: the kept set, each checked (400 past
    its range or length, or for a key not in the set); built from the parser's own limits."""
    properties: dict[str, Any] = {}
    for key in API_NUMBERS:
        low, high = ATTRIBUTE_RANGES[key]
        properties[key] = {"type": "number", "minimum": low, "maximum": high}
    for key in API_TEXTS:
        properties[key] = {"type": "string", "minLength": 1, "maxLength": MAX_ATTRIBUTE_CHARS}
    for key in API_LISTS:
        properties[key] = {
            "type": "array",
            "maxItems": MAX_ATTRIBUTE_ITEMS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_ATTRIBUTE_CHARS},
        }
    for key in API_FLAGS:
        properties[key] = {"type": "boolean"}
    properties["transition"] = {
        "type": "object",
        "required": ["event"],
        "additionalProperties": False,
        "properties": {
            "event": {"enum": ["enter", "leave"]},
            "region": {"type": "string", "maxLength": MAX_ATTRIBUTE_CHARS},
        },
    }
    return {
        "type": "object",
        "description": "Attributes to keep with the point (docs/gateway.md, the phone table's "
        "units): accuracy, altitude (m), speed (m/s), heading (degrees), battery (%), ...",
        "additionalProperties": False,
        "properties": properties,
    }


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
        "trigger": {"type": "string", "description": "what made the app report (OwnTracks t)"},
        "event": {"type": "string", "description": "an app-defined event (Traccar event)"},
        "alarm": {"type": "string", "description": "Traccar alarm, e.g. sos"},
        "name": {"type": "string", "description": "the device name as the phone sent it"},
        "transition": {
            "type": "object",
            "required": ["event"],
            "properties": {
                "event": {"enum": ["enter", "leave"]},
                "region": {"type": "string"},
            },
        },
        "motion": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        "regions": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
        "heartbeat": {
            "type": "boolean",
            "description": "true: a report without a fix, placed at the previous position",
        },
    },
}

RESULT = {
    "type": "object",
    "description": "What became of one report of a batch.",
    "required": ["stored", "status"],
    "properties": {
        "stored": {"type": "boolean"},
        "status": {"type": "integer", "description": "200, or 429: the herd refused it"},
        "message": {"type": "string"},
    },
}

RECORD = {
    "type": "object",
    "description": "A client's newest location as the herd holds it.",
    "required": [
        "client_id",
        "lat",
        "lon",
        "location",
        "client_time",
        "time",
        "server",
        "time_diff",
        "at",
        "attributes",
    ],
    "properties": {
        "client_id": {"type": "string"},
        "lat": {"type": ["number", "null"], "description": "null if location does not parse"},
        "lon": {"type": ["number", "null"], "description": "null if location does not parse"},
        "location": {"type": "string", "description": "ISO 6709, as sent in IAMAT"},
        "client_time": {"type": "string", "description": "POSIX seconds, verbatim"},
        "time": {
            "type": ["number", "null"],
            "description": "client_time as a number; null past the year 9999 (a record from "
            "a server older than the herd's time bound)",
        },
        "server": {"type": "string", "description": "the herd server that received the report"},
        "time_diff": {"type": "string", "description": "receive time minus client time"},
        "at": {"type": "string", "description": "the herd's AT line, byte for byte"},
        "attributes": ATTRIBUTES,
    },
}

PLACES = {
    "type": "object",
    "description": "Google Places Nearby Search (legacy) JSON.",
    "required": ["html_attributions", "results", "status"],
    "properties": {
        "html_attributions": {"type": "array", "items": {"type": "string"}},
        "results": {"type": "array", "items": {"type": "object"}},
        "status": {"type": "string"},
        "error_message": {"type": "string"},
    },
}

SERVER_STATUS = {
    "type": "object",
    "required": ["name", "host", "port", "up", "records", "places", "links"],
    "properties": {
        "name": {"type": "string"},
        "host": {"type": "string"},
        "port": {"type": "integer"},
        "up": {"type": "boolean"},
        "records": {"type": ["integer", "null"]},
        "places": {"type": ["string", "null"]},
        "links": {"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
    },
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}

UNAVAILABLE = _error("No herd server answered.")

# Only when tokens are configured (see docs/security.md); rate limits answer 429 wherever on.
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

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "herd gateway",
        "version": "1.0.0",
        "description": "Report and read client locations held by the herd, and find places "
        "near a client. Live updates: the WebSocket /api/v1/ws (see docs/gateway.md).",
    },
    "paths": {
        "/api/v1/locations": {
            "post": {
                "operationId": "reportLocations",
                "summary": "Report a location (IAMAT), or a batch of them",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _ref("Report"),
                                    {
                                        "type": "array",
                                        "items": _ref("Report"),
                                        "minItems": 1,
                                        "maxItems": 1000,
                                    },
                                    {
                                        "type": "object",
                                        "required": ["locations"],
                                        "properties": {
                                            "locations": {
                                                "type": "array",
                                                "items": _ref("Report"),
                                                "minItems": 1,
                                                "maxItems": 1000,
                                            }
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    **GUARDED,
                    "200": _json(
                        {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["record"],
                                    "properties": {"record": _ref("Record")},
                                },
                                {
                                    "type": "object",
                                    "required": ["records", "results"],
                                    "properties": {
                                        "records": {
                                            "type": "array",
                                            "items": {"oneOf": [_ref("Record"), {"type": "null"}]},
                                        },
                                        "results": {"type": "array", "items": RESULT},
                                    },
                                },
                            ]
                        },
                        "The record the herd made of each report, in order; in a batch, null "
                        "for a report the herd refused (a budget), and each report's result. "
                        "429 when it refused every one.",
                    ),
                    "400": _error("The body is not a valid report or batch."),
                    "413": _error("The body is larger than the gateway accepts."),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/clients": {
            "get": {
                "operationId": "listClients",
                "summary": "Every known client's location, paged by client ID",
                "parameters": [
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    **GUARDED,
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["clients", "total", "offset", "limit", "next_offset"],
                            "properties": {
                                "clients": {"type": "array", "items": _ref("Record")},
                                "total": {"type": "integer"},
                                "offset": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "next_offset": {"type": ["integer", "null"]},
                            },
                        },
                        "One page of clients.",
                    ),
                    "400": _error("offset or limit out of range."),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/clients/{client_id}": {
            "get": {
                "operationId": "getClient",
                "summary": "A client's current location (WHEREIS)",
                "parameters": [CLIENT_ID],
                "responses": {
                    **GUARDED,
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["record"],
                            "properties": {"record": _ref("Record")},
                        },
                        "The client's record.",
                    ),
                    "400": _error("The client ID is not valid."),
                    "404": _error("No location is known for this client."),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/clients/{client_id}/nearby": {
            "get": {
                "operationId": "getNearby",
                "summary": "Places near a client (WHATSAT)",
                "parameters": [
                    CLIENT_ID,
                    {
                        "name": "radius_km",
                        "in": "query",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 50},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 20},
                    },
                ],
                "responses": {
                    **GUARDED,
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["record", "places"],
                            "properties": {"record": _ref("Record"), "places": _ref("Places")},
                        },
                        "The client's record and the places near it, nearest first.",
                    ),
                    "400": _error("radius_km or limit out of range, or a bad client ID."),
                    "404": _error("No location is known for this client."),
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/herd": {
            "get": {
                "operationId": "herdStatus",
                "summary": "Every herd server, up or down, its links and record count",
                "responses": {
                    **GUARDED,
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["servers", "links", "subscribed_to"],
                            "properties": {
                                "servers": {"type": "array", "items": _ref("ServerStatus")},
                                "links": {
                                    "type": "array",
                                    "items": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "minItems": 2,
                                        "maxItems": 2,
                                    },
                                },
                                "subscribed_to": {"type": ["string", "null"]},
                            },
                        },
                        "The herd as the gateway sees it.",
                    ),
                },
            }
        },
    },
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


def spec_at(now_s: float, max_future: float) -> dict[str, Any]:
    """SPEC with a report's numeric time bounded as of ``now_s``: seconds up to ``now_s +
    max_future``, or milliseconds (from MS_THRESHOLD) up to the same instant, and never past
    the year 9999. Every time it allows is accepted later too (the bound only grows); a time
    just past it may be accepted a moment later."""
    spec = copy.deepcopy(SPEC)
    latest = min(math.floor(now_s + max_future), MAX_TIME_MS // 1000)
    schemas = spec["components"]["schemas"]
    time_schema = schemas["Report"]["properties"]["time"]
    time_schema["anyOf"] = [
        {"type": "number", "minimum": 0, "maximum": min(latest, MS_THRESHOLD - 1)},
        {"type": "number", "minimum": MS_THRESHOLD, "maximum": latest * 1000},
        *time_schema["anyOf"][1:],
    ]
    return spec
