"""The JSON Schemas of the OpenAPI document's components (``gateway/openapi.py``): a report,
its attributes, a record, places, a server's status, history's answers, an error.

Built from the rules the handlers apply (``gateway.rules``; the phone parsers' limits in
``gateway.phones``; ``records.RECORD_KEYS``), so that they cannot drift apart.
"""

from __future__ import annotations

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

__all__ = ["CLIENT_ID", "COMPONENTS", "MAX_TIME_MS", "RESULT", "Schema", "obj", "ref", "text"]

Schema = dict[str, Any]

# The latest time accepted, in milliseconds: the end of the year 9999.
MAX_TIME_MS = MAX_TIME_S * 1000 + 999


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Schema, required: tuple[str, ...] | None = None, **more: Any) -> Schema:
    """An object schema; every property required unless ``required`` says which."""
    needed = list(properties) if required is None else list(required)
    return {"type": "object", "required": needed, "properties": properties, **more}


def text(description: str) -> Schema:
    return {"type": "string", "description": description}


CLIENT_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": rules.MAX_CLIENT_ID,
    "pattern": rules.CLIENT_ID_PATTERN,
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

REPORT = obj(
    {
        "client_id": CLIENT_ID,
        "lat": {"type": "number", "minimum": -rules.MAX_LAT, "maximum": rules.MAX_LAT},
        "lon": {"type": "number", "minimum": -rules.MAX_LON, "maximum": rules.MAX_LON},
        "time": TIME,
        "attributes": {"anyOf": [ref("ReportAttributes"), {"type": "null"}]},
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
    properties["transition"] = obj(
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
        "trigger": text("what made the app report (OwnTracks t)"),
        "event": text("an app-defined event (Traccar event)"),
        "alarm": text("Traccar alarm, e.g. sos"),
        "name": text("the device name as the phone sent it"),
        "transition": obj(
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

RESULT = obj(
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
    "location": text("ISO 6709, as sent in IAMAT"),
    "client_time": text("POSIX seconds, verbatim"),
    "time": {
        "type": ["number", "null"],
        "description": "client_time as a number; null past the year 9999 (a record from "
        "a server older than the herd's time bound)",
    },
    "server": text("the herd server that received the report"),
    "time_diff": text("receive time minus client time"),
    "at": text("the herd's AT line, byte for byte"),
    "attributes": ATTRIBUTES,
}
# Every key records.record_json writes, in its order, each described above.
assert tuple(_RECORD_FIELDS) == RECORD_KEYS, "describe each key of records.record_json"
RECORD = obj(_RECORD_FIELDS, description="A client's newest location as the herd holds it.")

PLACES = obj(
    {
        "html_attributions": {"type": "array", "items": {"type": "string"}},
        "results": {"type": "array", "items": {"type": "object"}},
        "status": {"type": "string"},
        "error_message": {"type": "string"},
    },
    required=("html_attributions", "results", "status"),
    description="Google Places Nearby Search (legacy) JSON.",
)

PLACE_LABEL = obj(
    {
        "id": text('"geonames:<geonameid>" or "airport:<ICAO>", as in a place_id of Places'),
        "name": {"type": "string", "minLength": 1},
        "lat": {"type": "number", "minimum": -rules.MAX_LAT, "maximum": rules.MAX_LAT},
        "lon": {"type": "number", "minimum": -rules.MAX_LON, "maximum": rules.MAX_LON},
        "kind": {"enum": ["locality", "airport"]},
        "population": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "null for an airport",
        },
    },
    description="A place to label on the map.",
)

SERVER_STATUS = obj(
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

ERROR = obj({"error": obj({"status": {"type": "integer"}, "message": {"type": "string"}})})

_SECONDS = {"type": "number", "description": "POSIX seconds"}

HISTORY_PAGE = obj(
    {
        "client_id": CLIENT_ID,
        "points": {"type": "array", "items": ref("Record")},
        "next_cursor": {"type": ["string", "null"]},
    },
    description="A page of a client's points, oldest first.",
)

FEATURE_COLLECTION = obj(
    {
        "type": {"const": "FeatureCollection"},
        "client_id": {"type": "string"},
        "features": {
            "type": "array",
            "items": obj(
                {
                    "type": {"const": "Feature"},
                    "properties": {"type": "object"},
                    "geometry": obj(
                        {
                            "type": {"enum": ["LineString", "Point"]},
                            "coordinates": {"type": "array"},
                        }
                    ),
                }
            ),
        },
        "skipped": {"type": "integer", "minimum": 0},
    },
    description="RFC 7946 GeoJSON (docs/history-formats.md): a LineString feature of the "
    "trail (when it has two points or more), then a Point feature per point with its time "
    "and attributes; skipped counts points with no location or time.",
)

AREA_HISTORY = obj(
    {
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "since": _SECONDS,
        "until": _SECONDS,
        "clients": {
            "type": "array",
            "items": obj(
                {"client_id": CLIENT_ID, "points": {"type": "array", "items": ref("Record")}}
            ),
        },
        "truncated": {"type": "boolean", "description": "true: there were more points"},
    },
    description="The clients that were in the box in the window, by client ID, each with its "
    "points in the box, oldest first.",
)

_TRAIL_POINT = {
    "type": "array",
    "description": "latitude, longitude (degrees), time (POSIX seconds)",
    "items": {"type": "number"},
    "minItems": 3,
    "maxItems": 3,
}
TRAILS = obj(
    {
        "since": _SECONDS,
        "until": _SECONDS,
        "trails": {
            "type": "array",
            "maxItems": rules.MAX_TRAIL_CLIENTS,
            "items": obj(
                {
                    "client_id": CLIENT_ID,
                    "points": {"type": "array", "items": _TRAIL_POINT},
                }
            ),
        },
        "truncated": {
            "type": "boolean",
            "description": f"true: a limit cut the answer short (at most "
            f"{rules.MAX_TRAIL_CLIENTS:,} clients, {rules.MAX_TRAIL_READ:,} points read, "
            f"{rules.MAX_TRAIL_POINTS:,} points answered)",
        },
    },
    description="Each trail oldest first, simplified; by client ID.",
)


COMPONENTS: Schema = {
    "Report": REPORT,
    "Record": RECORD,
    "ReportAttributes": _report_attributes(),
    "Places": PLACES,
    "PlaceLabel": PLACE_LABEL,
    "ServerStatus": SERVER_STATUS,
    "HistoryPage": HISTORY_PAGE,
    "FeatureCollection": FEATURE_COLLECTION,
    "AreaHistory": AREA_HISTORY,
    "Trails": TRAILS,
    "Error": ERROR,
}
