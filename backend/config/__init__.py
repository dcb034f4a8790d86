"""Typed, frozen configuration of a herd, read from a TOML file or built in.

The whole herd (servers, links, secret, places, paths, limits) is described in one file so that
every server, the gateway and the operator read the same picture. See ``docs/config.md``.

The dataclasses and what each field accepts are in ``_model``; ``_typed`` decodes a table into
one by its types (msgspec); ``_load`` reads a file and checks what relates one setting to
another.
"""

from ._load import SectionCheck, check_section, default_config, load_config
from ._model import (
    DEFAULT_LINKS,
    DEFAULT_PORTS,
    GOOGLE_NEARBY_URL,
    Durability,
    GatewayConfig,
    HerdConfig,
    HistoryConfig,
    Limits,
    LogRotation,
    PeerTimings,
    PlacesConfig,
    ServerAddress,
    TlsConfig,
    is_loopback,
)
from ._typed import ConfigError

__all__ = [
    "DEFAULT_LINKS",
    "DEFAULT_PORTS",
    "GOOGLE_NEARBY_URL",
    "ConfigError",
    "Durability",
    "GatewayConfig",
    "HerdConfig",
    "HistoryConfig",
    "Limits",
    "LogRotation",
    "PeerTimings",
    "PlacesConfig",
    "SectionCheck",
    "ServerAddress",
    "TlsConfig",
    "check_section",
    "default_config",
    "is_loopback",
    "load_config",
]
