"""Loading a herd's config: the file decoded by its types, then the rules that relate one
setting to another (a link names a server; two servers never share a port), then the checks
that layers above the herd install for their own sections (the gateway's, in gateway/settings.py).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any

from msgspec import Meta

from ..protocol import MAX_SERVER_ID_BYTES
from ._model import (
    DEFAULT_LINKS,
    DEFAULT_PORTS,
    LOOPBACK,
    HerdConfig,
    Port,
    ServerAddress,
    Text,
    TlsConfig,
    is_loopback,
)
from ._typed import ConfigError, decode

__all__ = ["SectionCheck", "check_section", "default_config", "load_config"]

# The built-in secret: public, so allowed only for a herd that nothing else can reach.
DEFAULT_SECRET = "change-me"
# A secret of 32 printable characters from secrets.token_urlsafe carries 192 bits: even at a
# billion scrypt guesses a second (some 30 million times what one core does) no guess finds
# it. A shorter one may be a word; white space and non-ASCII invite copy-and-paste mistakes.
MIN_SECRET_CHARS = 32
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


@dataclass(frozen=True, slots=True)
class _Server:
    """A ``[servers.NAME]`` table."""

    port: Port
    host: Text = LOOPBACK
    # How this server reaches a neighbour that does not listen where it can reach it.
    dial: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Paths:
    logs: Path = Path("logs")  # one file per server: <logs>/<NAME>.log
    data: Path = Path("data")


_Link = Annotated[tuple[str, str], Meta(description="a pair of server names")]


@dataclass(frozen=True, slots=True)
class _Herd:
    """The keys of a config file that describe the herd itself; every other table is a
    section (see _SECTIONS)."""

    # Each [servers.NAME] is decoded on its own, so that an error names the server.
    servers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)
    links: Annotated[tuple[_Link, ...], Meta(description="a list of [NAME, NAME] pairs")] = ()
    paths: _Paths = field(default_factory=_Paths)
    tls: TlsConfig | None = None


# The sections: every field of HerdConfig whose default is a dataclass ([places], [limits],
# [gateway], ...), decoded from the table of its name. A new section is a dataclass in
# _model.py and a field of HerdConfig; nothing here changes.
_SECTIONS: dict[str, type[Any]] = {}
for _field in fields(HerdConfig):
    if isinstance(_field.default_factory, type) and is_dataclass(_field.default_factory):
        _SECTIONS[_field.name] = _field.default_factory

SectionCheck = Callable[[Any, Mapping[str, Any]], Any]
# Rules a layer above the herd keeps for its own section; the herd never imports that layer.
_CHECKS: dict[str, SectionCheck] = {}


def check_section(name: str, check: SectionCheck) -> None:
    """Have ``check`` settle the section ``[name]`` on every load from now on.

    ``check(section, table)`` receives the section as decoded and the table as written (so it
    can tell a default from a value set), returns the section to keep, and raises ConfigError
    for a setting it refuses. The gateway installs its rules this way when it is imported, and
    the ``herd`` command imports it, so that every command refuses a bad gateway setting.
    """
    _CHECKS[name] = check


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
            "servers": {name: {"port": port} for name, port in DEFAULT_PORTS.items()},
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


def _build(
    raw: dict[str, Any], base: Path, source: Path | None, env: Mapping[str, str]
) -> HerdConfig:
    raw = _with_env(raw, env)
    sections = {name: _section(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()}
    if sections["places"].provider == "google" and not sections["places"].google_api_key:
        raise ConfigError(
            "[places] provider 'google' needs a key: set GOOGLE_PLACES_API_KEY or google_api_key"
        )
    if raw.get("tls") == {}:  # an empty [tls] table: no TLS, as if it were not there
        del raw["tls"]
    herd = decode({k: v for k, v in raw.items() if k not in _SECTIONS}, _Herd)
    tables = _servers(herd.servers)
    servers = {name: ServerAddress(table.host, table.port) for name, table in tables.items()}
    for name in sections["gateway"].servers:
        if name not in servers:
            raise ConfigError(f"[gateway] servers names {name!r}, which is not in [servers]")
    return HerdConfig(
        secret=_secret(herd.secret, servers),
        servers=servers,
        links=_links(herd.links, servers),
        logs_dir=base / herd.paths.logs,
        data_dir=base / herd.paths.data,
        dial=_dial(tables, servers),
        tls=_tls(herd.tls, base),
        source=source,
        **sections,
    )


def _section(name: str, cls: type[Any], table: Any) -> Any:
    section = decode(table, cls, (name,))
    check = _CHECKS.get(name)
    return check(section, table) if check else section


def _with_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``raw`` with what the environment says of [places], which wins over the file;
    the provider is Google when there is a key."""
    places = raw.get("places", {})
    if not isinstance(places, dict):
        return dict(raw)  # not a table: decode says so
    key = env.get("GOOGLE_PLACES_API_KEY") or places.get("google_api_key") or None
    places = {"provider": "google" if key else "embedded", **places, "google_api_key": key}
    if url := env.get("GOOGLE_PLACES_URL") or places.pop("google_url", None):  # "": default
        places["google_url"] = url
    return {**raw, "places": places}


def _secret(value: str | None, servers: Mapping[str, ServerAddress]) -> str:
    """The herd secret: a strong explicit one, or the built-in one on a loopback-only herd."""
    if value is None:
        exposed = [f"{n} ({a.host})" for n, a in servers.items() if not is_loopback(a.host)]
        if exposed:
            raise ConfigError(
                f"no 'secret' is set, and the built-in one ({DEFAULT_SECRET!r}) is public: it "
                f"is allowed only when every server listens on loopback, but not "
                f"{', '.join(exposed)}; set secret = a random string of at least "
                f"{MIN_SECRET_CHARS} characters, made with: {MAKE_SECRET}"
            )
        return DEFAULT_SECRET
    # Never echo the secret: error messages end up in logs and terminals.
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


def _servers(raw: Mapping[str, dict[str, Any]]) -> dict[str, _Server]:
    """Each ``[servers.NAME]``, decoded on its own so that an error names the server."""
    if not raw:
        raise ConfigError("[servers] must have at least one [servers.NAME] table")
    tables: dict[str, _Server] = {}
    seen: dict[tuple[str, int], str] = {}
    for name, table in raw.items():
        where = f"[servers.{name}]"
        if not name or any(ch.isspace() for ch in name):
            raise ConfigError(f"{where}: a server name must be non-empty with no white space")
        if len(name.encode()) > MAX_SERVER_ID_BYTES:
            raise ConfigError(f"{where}: a server name must be at most {MAX_SERVER_ID_BYTES} bytes")
        server = tables[name] = decode(table, _Server, ("servers", name))
        if (other := seen.setdefault((server.host, server.port), name)) != name:
            raise ConfigError(
                f"{where}: duplicate port {server.port} on {server.host} (also used by {other})"
            )
    return tables


def _dial(
    tables: Mapping[str, _Server], servers: Mapping[str, ServerAddress]
) -> dict[tuple[str, str], ServerAddress]:
    dial: dict[tuple[str, str], ServerAddress] = {}
    for name, table in tables.items():
        for target, address in table.dial.items():
            where = f"[servers.{name}.dial]"
            if target not in servers:
                raise ConfigError(f"{where} names {target!r}, which is not in [servers]")
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ConfigError(
                    f'{where} {target} must be "host:port" (port 1..65535), got {address!r}'
                )
            dial[name, target] = ServerAddress(host, int(port))
    return dial


def _links(
    pairs: tuple[tuple[str, str], ...], servers: Mapping[str, ServerAddress]
) -> frozenset[frozenset[str]]:
    for pair in pairs:
        for name in pair:
            if name not in servers:
                raise ConfigError(
                    f"link {list(pair)!r} goes to {name!r}, which is not in [servers]"
                )
        if pair[0] == pair[1]:
            raise ConfigError(f"link {list(pair)!r} joins a server to itself")
    return frozenset(frozenset(pair) for pair in pairs)


def _tls(tls: TlsConfig | None, base: Path) -> TlsConfig | None:
    if tls is None:
        return None
    resolved = TlsConfig(cert=base / tls.cert, key=base / tls.key, ca=base / tls.ca)
    for key in ("cert", "key", "ca"):
        path: Path = getattr(resolved, key)
        if not path.is_file():
            raise ConfigError(f"[tls] {key}: no such file {path}")
    return resolved
