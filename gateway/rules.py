"""Each rule the gateway applies to what a client sends, written once, with no I/O.

The REST API (``api.py``), the WebSocket commands (``ws.py``), the phone formats
(``phones/``) and the OpenAPI document (``openapi.py``, built from these constants) all read
them here: a client ID, a WHATSAT radius and bound, a page of the client list, a batch. The
limits on a whole body are settings, not constants (``[gateway] max_body_bytes``, applied as
the application's ``client_max_size``, and ``max_ws_message``, applied to each WebSocket);
:func:`body_limits` says them for the document, and ``phones.MAX_JSON_DEPTH`` bounds what a
JSON body may nest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from backend.protocol import MAX_BOUND, MAX_CLIENT_ID_BYTES, MAX_HISTORY_LIMIT, MAX_RADIUS_KM

from .errors import ApiError
from .numbers import NumberError, bounded_decimal, whole_number

__all__ = [
    "AREA_PAGE",
    "BBOX",
    "BOUND",
    "CLIENT_ID_PATTERN",
    "DEFAULT_RADIUS_KM",
    "HISTORY_FORMATS",
    "HISTORY_PAGE",
    "MAX_BATCH",
    "MAX_BOUND",
    "MAX_CLIENT_ID",
    "MAX_CLIENT_ID_BYTES",
    "MAX_LAT",
    "MAX_LON",
    "MAX_RADIUS_KM",
    "MAX_SIMPLIFY_M",
    "MAX_TRAIL_CLIENTS",
    "MAX_TRAIL_POINTS",
    "MAX_TRAIL_READ",
    "MAX_VIEW_PX",
    "MAX_ZOOM",
    "MERCATOR_MAX_LAT",
    "OFFSET",
    "PAGE",
    "SECONDS",
    "VIEW_HEIGHT",
    "VIEW_LAT",
    "VIEW_LON",
    "VIEW_WIDTH",
    "VIEW_ZOOM",
    "WHITE_SPACE",
    "WORLD",
    "Box",
    "NumberRange",
    "WholeRange",
    "bbox",
    "body_limits",
    "client_id_problem",
    "history_format",
    "plain",
    "radius_km",
    "seconds_ns",
    "simplify_m",
]

# -- client IDs --------------------------------------------------------------------------

# Device IDs are IMEIs, UUIDs or MQTT topics; 256 is ample and keeps an IAMAT line far
# below the herd's 8 KiB line limit even in 4-byte UTF-8.
MAX_CLIENT_ID = 256
# The herd splits lines on exactly these six characters (backend.protocol.parse_line); any
# other character, Unicode spaces included, may be part of a client ID.
WHITE_SPACE = " \t\r\n\x0b\x0c"
_WHITE_SPACE = frozenset(WHITE_SPACE)
# The rule as a JSON Schema pattern (the length is the schema's maxLength).
CLIENT_ID_PATTERN = f"^[^{WHITE_SPACE}]+$"


def client_id_problem(value: object) -> str | None:
    """Why ``value`` is not a client ID the herd takes, or None if it is one: text, not
    empty, at most MAX_CLIENT_ID characters and MAX_CLIENT_ID_BYTES bytes of UTF-8, no
    WHITE_SPACE."""
    if value is None:
        return "client ID is missing"
    if not isinstance(value, str):
        return "client ID must be a string"
    if not value:
        return "client ID is empty"
    if len(value) > MAX_CLIENT_ID:
        return f"client ID is longer than {MAX_CLIENT_ID} characters"
    if not _WHITE_SPACE.isdisjoint(value):
        return "client ID contains white space"
    try:
        encoded = value.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON "\ud800" can produce
        return "client ID is not valid Unicode"
    if len(encoded) > MAX_CLIENT_ID_BYTES:  # unreachable: 256 characters are <= 1,024 bytes
        return f"client ID is longer than {MAX_CLIENT_ID_BYTES} bytes"
    return None


# -- positions ---------------------------------------------------------------------------

# Degrees either side of zero: latitude, longitude (what the herd's ISO 6709 locations hold).
MAX_LAT = 90
MAX_LON = 180

# -- batches -----------------------------------------------------------------------------

# Phones upload tens to hundreds of points at a time; 1000 covers any batch-size setting,
# and is a day of fixes at a 90 s interval. Bigger requests are abuse, not backlog.
MAX_BATCH = 1000

# -- whole numbers: WHATSAT's bound, the client list's pages ------------------------------


@dataclass(frozen=True, slots=True)
class WholeRange:
    """A whole-number parameter: its name, its range (``high`` None: unbounded) and default
    (None: the parameter is required)."""

    name: str
    low: int
    high: int | None
    default: int | None

    @property
    def span(self) -> str:
        return f"{self.low}..{self.high}" if self.high is not None else f">= {self.low}"

    def _within(self, value: int) -> bool:
        return value >= self.low and (self.high is None or value <= self.high)

    def from_text(self, raw: str | None) -> int:
        """The value of a query parameter (``raw`` None: the default); raises ApiError(400)."""
        if raw is None:
            if self.default is None:
                raise ApiError(400, f"{self.name} is required")
            return self.default
        try:
            value = whole_number(raw)
        except NumberError as exc:
            raise ApiError(400, f"{self.name} {exc}") from None
        if not self._within(value):
            raise ApiError(400, f"{self.name} must be in {self.span}")
        return value

    def from_json(self, value: object) -> int:
        """The value of a JSON member (absent: pass the default); raises ApiError(400)."""
        if not isinstance(value, int) or isinstance(value, bool) or not self._within(value):
            raise ApiError(400, f"{self.name} must be a whole number in {self.span}")
        return value


# How many places WHATSAT lists: the herd's own bound (backend.protocol.MAX_BOUND).
BOUND = WholeRange("limit", 1, MAX_BOUND, 5)
# A page of the client list: enough for a map's first view, small enough to answer quickly.
PAGE = WholeRange("limit", 1, 1000, 100)
# A page of a client's history: the herd answers at most MAX_HISTORY_LIMIT points a HISTORY.
HISTORY_PAGE = WholeRange("limit", 1, MAX_HISTORY_LIMIT, 1000)
# A history window's ends: POSIX seconds as the herd reads them (digits, up to nine decimals).
SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def seconds_ns(name: str, raw: str | None, default_ns: int) -> int:
    """A window end (``since``/``until``) in nanoseconds; raises ApiError(400)."""
    if raw is None:
        return default_ns
    if SECONDS.fullmatch(raw) is None:
        raise ApiError(400, f"{name} must be POSIX seconds (digits, up to nine decimals)")
    whole, _, fraction = raw.partition(".")
    return int(whole) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


OFFSET = WholeRange("offset", 0, None, 0)

# -- a map view (place labels: gateway/labels.py) ------------------------------------------


@dataclass(frozen=True, slots=True)
class NumberRange:
    """A required number in a query parameter, in [low, high]."""

    name: str
    low: float
    high: float

    def from_text(self, raw: str | None) -> float:
        """The value of a query parameter; raises ApiError(400) when it is missing, not a
        number, or out of range."""
        if raw is None:
            raise ApiError(400, f"{self.name} is required")
        try:
            value = float(bounded_decimal(raw))
        except NumberError as exc:
            raise ApiError(400, f"{self.name} {exc}") from None
        if not self.low <= value <= self.high:  # infinity (a huge exponent) included
            raise ApiError(400, f"{self.name} must be a number in [{self.low:g}, {self.high:g}]")
        return value


# The map's deepest zoom (static/map.js maxZoom; tile servers end there too).
MAX_ZOOM = 19
# A view's width and height in CSS pixels. The widest screens (8K) are 7,680 device pixels, so
# no browser window is wider; the bound also bounds the work of one query.
MAX_VIEW_PX = 8192
# Web Mercator's edge (the map's maxBounds): a centre nearer a pole is read as at the edge.
MERCATOR_MAX_LAT = 85.0511287798
VIEW_LAT = NumberRange("lat", -MAX_LAT, MAX_LAT)
VIEW_LON = NumberRange("lon", -MAX_LON, MAX_LON)
# Leaflet zooms in whole steps by default, but a fractional zoom (pinch) is a view too.
VIEW_ZOOM = NumberRange("zoom", 0, MAX_ZOOM)
# The map's size (Leaflet's getSize(): whole CSS pixels); required.
VIEW_WIDTH = WholeRange("width", 1, MAX_VIEW_PX, None)
VIEW_HEIGHT = WholeRange("height", 1, MAX_VIEW_PX, None)

# -- WHATSAT's radius --------------------------------------------------------------------

DEFAULT_RADIUS_KM = 10


def radius_km(value: object) -> Decimal:
    """A WHATSAT radius in km from a query parameter or a JSON value; raises ApiError(400)
    unless it is a bounded number in (0, MAX_RADIUS_KM] (backend.protocol's bound)."""
    rule = f"radius_km must be a number in (0, {MAX_RADIUS_KM}]"
    try:
        radius = bounded_decimal(value)
    except NumberError as exc:
        raise ApiError(400, f"{rule}; it {exc}") from None
    if not 0 < radius <= MAX_RADIUS_KM:  # infinity (a huge exponent) included
        raise ApiError(400, rule)
    return radius


def plain(value: Decimal) -> str:
    """A bounded Decimal in positional notation, trailing zeros trimmed (``10``, ``0.5``)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- history reads: formats, simplification, areas, trails --------------------------------

# What GET /api/v1/clients/{id}/history answers: JSON pages, or the whole window streamed as
# one document (gateway/history/export.py).
HISTORY_FORMATS = ("json", "geojson", "gpx")
# A simplification tolerance, metres: two pixels at zoom 0 are 313 km (trails.metres_per_pixel);
# past 1,000 km a trail keeps little more than its ends on any map.
MAX_SIMPLIFY_M = 1_000_000


def history_format(raw: str | None) -> str:
    """``format``: one of HISTORY_FORMATS (default json); raises ApiError(400)."""
    if raw is None:
        return "json"
    if raw not in HISTORY_FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(HISTORY_FORMATS)}")
    return raw


def simplify_m(raw: str | None) -> float:
    """``simplify``: a tolerance in metres in (0, MAX_SIMPLIFY_M], or 0 when absent (every
    point kept); raises ApiError(400)."""
    if raw is None:
        return 0.0
    rule = f"simplify must be a number of metres in (0, {MAX_SIMPLIFY_M}]"
    try:
        metres = bounded_decimal(raw)
    except NumberError as exc:
        raise ApiError(400, f"{rule}; it {exc}") from None
    if not 0 < metres <= MAX_SIMPLIFY_M:
        raise ApiError(400, rule)
    return float(metres)


# Points a GET /api/v1/history?bbox= answers: one AREA of the herd (at most MAX_HISTORY_LIMIT).
AREA_PAGE = WholeRange("limit", 1, MAX_HISTORY_LIMIT, 1000)
# GET /api/v1/trails bounds its work, and says "truncated": true past any of these:
# clients per request: a map's view of a fleet; a thousand trails read at four at a time
# take a few seconds;
MAX_TRAIL_CLIENTS = 1000
# points read from the herd per request: half a million AT lines are parsed in about two
# seconds of the gateway's CPU (about 4 us a line);
MAX_TRAIL_READ = 500_000
# points answered per request: a canvas map draws 100,000 points smoothly (issue 14's aim),
# about 4 MB of JSON.
MAX_TRAIL_POINTS = 100_000

# A box's corner as text: plain decimals within the globe (the pattern states the range, so
# the OpenAPI document can say exactly what is accepted), at most 15 decimals as the herd's
# AREA reads them (sub-nanometre).
_LAT = r"[+-]?(?:90(?:\.0{1,15})?|[0-8]?[0-9](?:\.[0-9]{1,15})?)"
_LON = r"[+-]?(?:180(?:\.0{1,15})?|(?:1[0-7][0-9]|[0-9]?[0-9])(?:\.[0-9]{1,15})?)"
BBOX = re.compile(f"{_LON},{_LAT},{_LON},{_LAT}")


@dataclass(frozen=True, slots=True)
class Box:
    """A bounding box in degrees, exact: ``west`` after ``east`` is a box across the
    antimeridian (as the WebSocket's bbox filter reads it); ``south`` after ``north`` holds
    nothing."""

    west: Decimal
    south: Decimal
    east: Decimal
    north: Decimal

    @property
    def empty(self) -> bool:
        return self.south > self.north

    def parts(self) -> tuple[Box, ...]:
        """The box as boxes with west <= east, the only kind the herd's AREA takes: one, or
        two for a box across the antimeridian (none for an empty box)."""
        if self.empty:
            return ()
        if self.west <= self.east:
            return (self,)
        edge = Decimal(MAX_LON)
        return (
            Box(self.west, self.south, edge, self.north),
            Box(-edge, self.south, self.east, self.north),
        )

    def fields(self) -> str:
        """``<west> <south> <east> <north>`` as the herd's AREA reads them."""
        return " ".join(format(v, "f") for v in (self.west, self.south, self.east, self.north))

    def shown(self) -> list[float]:
        return [float(v) for v in (self.west, self.south, self.east, self.north)]


WORLD = Box(Decimal(-MAX_LON), Decimal(-MAX_LAT), Decimal(MAX_LON), Decimal(MAX_LAT))


def bbox(raw: str | None) -> Box | None:
    """``bbox=west,south,east,north`` in degrees within the globe, or None when absent;
    raises ApiError(400) naming it."""
    if raw is None:
        return None
    if BBOX.fullmatch(raw) is None:
        raise ApiError(
            400,
            "bbox must be west,south,east,north: four decimal numbers of degrees within the "
            f"globe (longitudes -{MAX_LON} to {MAX_LON}, latitudes -{MAX_LAT} to {MAX_LAT})",
        )
    west, south, east, north = (Decimal(v) for v in raw.split(","))
    return Box(west, south, east, north)


# -- bodies ------------------------------------------------------------------------------


def body_limits(max_body_bytes: int, max_ws_message: int, max_import_bytes: int) -> str:
    """The configured limits on a request body, a history import and a WebSocket message,
    in words."""
    return (
        f"A request body is at most {max_body_bytes:,} bytes ([gateway] max_body_bytes: 413 "
        f"past it), a history import at most {max_import_bytes:,} ([gateway] "
        f"max_import_bytes); a WebSocket message at most {max_ws_message:,} ([gateway] "
        "max_ws_message)."
    )
