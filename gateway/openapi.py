"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json`` and shown by
Swagger UI at ``/api/docs``: the operations; their schemas are in ``gateway/schemas.py``.

Built from the rules the handlers apply (``gateway.rules``: client IDs, radius, bound, pages,
batches), so the document cannot drift from them; the contract test (schemathesis) checks
that every documented operation answers as documented.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from backend.protocol import MAX_TIME_S

from . import labels, rules, schemas
from .history import MAX_IMPORT_POINTS
from .phones import MS_THRESHOLD
from .schemas import COMPONENTS, RESULT, Schema, obj, ref

__all__ = ["SPEC", "spec_at"]


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(ref("Error"), description)


def _whole(whole: rules.WholeRange) -> Schema:
    bounds = {"minimum": whole.low} | ({} if whole.high is None else {"maximum": whole.high})
    default = {} if whole.default is None else {"default": whole.default}
    return {"type": "integer", **default, **bounds}


def _number(number: rules.NumberRange) -> Schema:
    return {"type": "number", "minimum": number.low, "maximum": number.high}


def _query(name: str, schema: Schema, required: bool = False) -> Schema:
    needed = {"required": True} if required else {}
    return {"name": name, "in": "query", "schema": schema, **needed}


def _view(rule: rules.NumberRange | rules.WholeRange, description: str) -> Schema:
    """A required parameter of a map view."""
    schema = _number(rule) if isinstance(rule, rules.NumberRange) else _whole(rule)
    return _query(rule.name, schema, required=True) | {"description": description}


# A window's end: POSIX seconds, as text so that no precision is lost (both ends inclusive).
SECONDS: Schema = {"type": "string", "pattern": f"^{rules.SECONDS.pattern}$"}

# A simplification tolerance (metres): Ramer-Douglas-Peucker keeps the points that bend the
# trail by more; absent, every point is kept.
SIMPLIFY: Schema = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": rules.MAX_SIMPLIFY_M,
    "description": "Metres: keep only the points that bend the trail by more (the first and "
    "last always). Absent: every point.",
}
# A box: west,south,east,north in degrees; west after east crosses the antimeridian, south
# after north holds nothing.
BBOX: Schema = {
    "type": "string",
    "pattern": f"^{rules.BBOX.pattern}$",
    "description": "west,south,east,north in degrees (west after east: a box across the "
    "antimeridian).",
}

CLIENT_ID = {
    "name": "client_id",
    "in": "path",
    "required": True,
    "description": "The client's ID: any text with no white space.",
    "schema": schemas.CLIENT_ID,
}


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
        obj({"record": ref("Record")}),
        obj(
            {
                "records": {
                    "type": "array",
                    "items": {"oneOf": [ref("Record"), {"type": "null"}]},
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
                        ref("Report"),
                        _batch(ref("Report")),
                        obj({"locations": _batch(ref("Report"))}),
                    ]
                }
            }
        },
    },
)

CLIENT_PAGE = obj(
    {
        "clients": {"type": "array", "items": ref("Record")},
        "total": {"type": "integer"},
        "offset": {"type": "integer"},
        "limit": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
    }
)

HERD = obj(
    {
        "servers": {"type": "array", "items": ref("ServerStatus")},
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

# Writing a client's history (gateway/history_write.py): an import and a deletion.
IMPORTED = obj(
    {
        "imported": {"type": "integer", "minimum": 0, "description": "points now in history"},
        "duplicates": {
            "type": "integer",
            "minimum": 0,
            "description": "points the herd held already, and repeats within the file",
        },
        "not_kept": {
            "type": "integer",
            "minimum": 0,
            "description": "points the herd answered but does not keep: at or before a "
            "deletion of this client's history",
        },
    }
)
FILE_SCHEMA = {
    "type": "object",
    "description": "A GeoJSON FeatureCollection or Feature: Point features with a time "
    "property, LineStrings with per-position times (docs/history-formats.md).",
}
POST_HISTORY = _operation(
    "importHistory",
    "Import a GPX or GeoJSON file into a client's history, all or nothing",
    {
        "200": _json(IMPORTED, "What became of the file's points."),
        "400": _error(
            "A point of the file is bad, named in the message (no time, coordinates out of "
            "range, more than max_future ahead, older than [history] keep_days), the body is "
            "not the GPX or GeoJSON it says, or a bad client ID. Nothing was imported."
        ),
        "404": _error("The path names no client (a client ID holds no line break)."),
        "408": _error("The body did not keep up the pace of [gateway] body_timeout."),
        "413": _error(
            f"The body is over [gateway] max_import_bytes, or holds more than "
            f"{MAX_IMPORT_POINTS:,} points. Nothing was imported."
        ),
        "415": _error("The body is neither GPX nor GeoJSON."),
        "503": _error("No herd server answered, or history is off in the herd."),
    },
    parameters=[CLIENT_ID],
    requestBody={
        "required": True,
        "content": {
            "application/gpx+xml": {
                "schema": {"type": "string", "description": "A GPX 1.0 or 1.1 file."}
            },
            "application/geo+json": {"schema": FILE_SCHEMA},
            "application/json": {"schema": FILE_SCHEMA},
        },
    },
)
DELETE_HISTORY = _operation(
    "deleteHistory",
    "Delete a client's points at or before a time, on every server (FORGET)",
    {
        "200": _json(
            obj({"client_id": schemas.CLIENT_ID, "until": SECONDS}),
            "The points are deleted on the server that answered, and the deletion is on its "
            "way to every other (a server cut off applies it when it returns).",
        ),
        "400": _error(
            "until is missing, not POSIX seconds, after the year 9999 or more than "
            "max_future ahead; or a bad client ID."
        ),
        "404": _error("The path names no client (a client ID holds no line break)."),
        "503": _error("No herd server answered, or history is off in the herd."),
    },
    parameters=[
        CLIENT_ID,
        {
            "name": "until",
            "in": "query",
            "required": True,
            "description": "POSIX seconds: the client's points at or before it are deleted, "
            "and none at or before it is kept from then on.",
            "schema": SECONDS,
        },
    ],
)

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
                "200": _json(obj({"record": ref("Record")}), "The client's record."),
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
                    obj({"record": ref("Record"), "places": ref("Places")}),
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
    "/api/v1/clients/{client_id}/history": {
        "get": _operation(
            "getHistory",
            "A client's points in a time window, oldest first: a page at a time (HISTORY), "
            "or the whole window as GPX or GeoJSON",
            {
                "200": {
                    "description": "format=json: a page of points (each a record as getClient "
                    "shows it, with its attributes); next_cursor, when not null, asks for the "
                    "next page. format=gpx or geojson: the whole window, streamed as an "
                    "attachment (docs/history-formats.md); if the herd fails mid-stream the "
                    "body ends short of its end.",
                    "content": {
                        "application/json": {"schema": ref("HistoryPage")},
                        "application/geo+json": {"schema": ref("FeatureCollection")},
                        "application/gpx+xml": {"schema": {"type": "string"}},
                    },
                },
                "400": _error(
                    "format, simplify, since, until, limit or cursor not valid, or a bad client ID."
                ),
                "404": _error("The path names no client (a client ID holds no line break)."),
                "503": _error("No herd server answered, or history is off in the herd."),
            },
            parameters=[
                CLIENT_ID,
                _query("since", SECONDS | {"default": "0"}),
                _query("until", SECONDS | {"description": "Default: the herd's last time."}),
                _query(
                    "limit",
                    _whole(rules.HISTORY_PAGE)
                    | {"description": "Points read for a JSON page (before simplify)."},
                ),
                _query("cursor", {"type": "string", "pattern": "^[0-9]{1,21}:[0-9]{1,5}$"}),
                _query(
                    "format",
                    {
                        "enum": list(rules.HISTORY_FORMATS),
                        "default": "json",
                        "description": "gpx or geojson: the whole window as one document "
                        "(limit and cursor page JSON only).",
                    },
                ),
                _query("simplify", SIMPLIFY),
            ],
        ),
        "post": POST_HISTORY,
        "delete": DELETE_HISTORY,
    },
    "/api/v1/history": {
        "get": _operation(
            "getAreaHistory",
            "The clients that were in a box in a time window, with their points there (AREA)",
            {
                "200": _json(ref("AreaHistory"), "The clients and their points in the box."),
                "400": _error("bbox missing or not valid, or since, until or limit not valid."),
                "503": _error("No herd server answered, or history is off in the herd."),
            },
            parameters=[
                {**_query("bbox", BBOX), "required": True},
                _query("since", SECONDS | {"default": "0"}),
                _query("until", SECONDS | {"description": "Default: the herd's last time."}),
                _query(
                    "limit",
                    _whole(rules.AREA_PAGE) | {"description": "Points in all, every client's."},
                ),
            ],
        )
    },
    "/api/v1/trails": {
        "get": _operation(
            "getTrails",
            "Simplified trails of the clients in a box in a time window, for a map",
            {
                "200": _json(ref("Trails"), "Each client's trail in the window."),
                "400": _error("bbox, since, until or simplify not valid."),
                "503": _error("No herd server answered, or history is off in the herd."),
            },
            parameters=[
                _query("bbox", BBOX | {"description": "Default: the whole world."}),
                _query(
                    "since",
                    SECONDS | {"description": "Default: [gateway] trail_hours (24) before until."},
                ),
                _query("until", SECONDS | {"description": "Default: now."}),
                _query("simplify", SIMPLIFY),
            ],
        )
    },
    "/api/v1/places": {
        "get": _operation(
            "getPlaceLabels",
            "The places to label in a map view, most important first",
            {
                "200": _json(
                    obj(
                        {
                            "places": {
                                "type": "array",
                                "items": ref("PlaceLabel"),
                                "maxItems": labels.MAX_LABELS,
                            },
                            "attribution": {"type": "string"},
                        }
                    ),
                    "The places inside the view, most important first (population; an "
                    f"airport ranks as {labels.AIRPORT_RANK:,} people): at most "
                    f"{labels.MAX_LABELS}, at most one per {labels.LABEL_CELL[0]} x "
                    f"{labels.LABEL_CELL[1]} px cell of the world's pixel grid, none below the "
                    "zoom's population floor, airports from zoom "
                    f"{labels.AIRPORT_MIN_ZOOM} on. Their data's sources, to credit.",
                ),
                "400": _error("A view parameter is missing or out of range."),
                "503": _error("The place data could not be read."),
            },
            description="The view is what the map draws (Web Mercator, 256-pixel tiles): "
            "its centre, zoom and size. A centre beyond Web Mercator's "
            f"±{rules.MERCATOR_MAX_LAT:.4f}° is read as at that edge; a view across the "
            "antimeridian, or wider than the world, is answered like any other.",
            parameters=[
                _view(rules.VIEW_LAT, "The view's centre: latitude, degrees."),
                _view(rules.VIEW_LON, "The view's centre: longitude, degrees."),
                _view(rules.VIEW_ZOOM, "The zoom (Leaflet's, fractions allowed)."),
                _view(rules.VIEW_WIDTH, "The view's width in CSS pixels."),
                _view(rules.VIEW_HEIGHT, "The view's height in CSS pixels."),
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
        "schemas": COMPONENTS,
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
