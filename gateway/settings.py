"""The gateway's own rules for its ``[gateway]`` settings (docs/security.md).

backend/config decodes the section by type (a port, seconds, lists of strings). What a token
looks like, when a gateway may run open, and the rate limits and Host names it defaults to are
the gateway's policy, so they are here: ``settle`` runs on every load of a config once the
gateway is imported (``check_section``), and the ``herd`` command imports it, so every command
refuses a bad gateway setting before anything starts. No aiohttp here: ``herd server`` imports
this module too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from backend.config import ConfigError, GatewayConfig, check_section, is_loopback

__all__ = ["ANY_HOST", "LOOPBACK_NAMES", "TOKEN_CHARS", "settle"]

# Tokens travel in URLs, headers and cookies, so only URL-safe characters; 16 of them from
# secrets.token_urlsafe are ~96 bits, far past online guessing; 256 fits anywhere.
MIN_TOKEN, MAX_TOKEN = 16, 256
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
TOKEN_RULE = f"{MIN_TOKEN}..{MAX_TOKEN} characters from A-Z a-z 0-9 - . _ ~"
# Rate limits are on by default wherever access is guarded or the gateway can be reached from
# elsewhere. A loopback gateway with no tokens stays as open as it always was: only local tools
# reach it (the benchmark, the contract test), and a limit there would only throttle them. A
# phone reports every few seconds at most; a map page load is ~15 requests and then one every
# few seconds.
GUARDED_RATES = {"rate_per_client": 10.0, "rate_per_address": 50.0}
# Names a loopback gateway is always reachable by: a DNS-rebinding page can make a browser
# send its own name as Host, never one of these.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The allowed_hosts entry that allows any Host (behind a reverse proxy that checks it).
ANY_HOST = "*"
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::"})
HOSTS_RULE = (
    "a list of host names or IP addresses without port (IPv6 in brackets, "
    f'e.g. "[::1]"), or "{ANY_HOST}" for any'
)


def settle(gateway: GatewayConfig, table: Mapping[str, Any]) -> GatewayConfig:
    """``gateway`` checked against the gateway's rules, with the defaults that depend on other
    settings filled in; ``table`` is the section as written, to tell a default from a value
    set. Raises ConfigError."""
    _check_tokens(gateway)
    tokens = bool(gateway.read_tokens or gateway.write_tokens)
    if tokens and gateway.open_access:
        raise ConfigError("[gateway] open_access = true contradicts the configured tokens")
    if not tokens and not gateway.open_access and not is_loopback(gateway.host):
        raise ConfigError(
            f"[gateway] host {gateway.host!r} is not a loopback address, so anyone who reaches "
            "it could read and write every location: configure read_tokens and write_tokens, "
            "or set open_access = true to allow it (docs/security.md)"
        )
    guarded = tokens or not is_loopback(gateway.host)

    def rate(key: str) -> float:
        value: float = getattr(gateway, key)
        return GUARDED_RATES[key] if guarded and key not in table else value

    return replace(
        gateway,
        read_tokens=tuple(dict.fromkeys(gateway.read_tokens)),
        rate_per_client=rate("rate_per_client"),
        rate_per_address=rate("rate_per_address"),
        allowed_hosts=_allowed_hosts(gateway, "allowed_hosts" in table),
    )


def _token_ok(token: str) -> bool:
    return MIN_TOKEN <= len(token) <= MAX_TOKEN and set(token) <= TOKEN_CHARS


def _check_tokens(gateway: GatewayConfig) -> None:
    # Never echo a token: error messages end up in logs and terminals.
    if not all(_token_ok(token) for token in gateway.read_tokens):
        raise ConfigError(f"[gateway] read_tokens must be a list of tokens of {TOKEN_RULE}")
    for token, client_id in gateway.write_tokens.items():
        if not _token_ok(token):
            raise ConfigError(f"[gateway.write_tokens]: a token must be {TOKEN_RULE}")
        if not client_id or any(ch.isspace() for ch in client_id):
            raise ConfigError(
                "[gateway.write_tokens]: each token maps to a client ID (no white space)"
            )
        if token in gateway.read_tokens:
            raise ConfigError("[gateway] a token is both a read token and a write token")


def _host_ok(name: str) -> bool:
    """Whether ``name`` is a DNS name or an IP address (IPv6 in brackets) as browsers send
    them in Host, without port; or ``*``."""
    if not 0 < len(name) <= 253:  # the longest DNS name
        return False
    bracketed = name.startswith("[") and name.endswith("]")  # IPv6, colons and all
    inner = name[1:-1] if bracketed else name
    return bool(inner) and not any(
        ch.isspace() or ch in "/@?#,[]" or (ch == ":" and not bracketed) for ch in inner
    )


def _allowed_hosts(gateway: GatewayConfig, listed: bool) -> tuple[str, ...]:
    """The Host names answered, compared without case, port or trailing dot: the loopback
    names, ``host`` when it is one name or address, and those listed; "*" (any) when it is a
    wildcard address and none are listed (tokens guard it, docs/security.md)."""
    if not all(_host_ok(name) for name in gateway.allowed_hosts):
        raise ConfigError(f"[gateway] allowed_hosts must be {HOSTS_RULE}")
    host = gateway.host.strip("[]")
    wildcard = host in WILDCARD_ADDRESSES
    hosts = list(LOOPBACK_NAMES)
    if wildcard and not listed:
        hosts.append(ANY_HOST)
    if not wildcard:
        hosts.append(f"[{host}]" if ":" in host else host)
    hosts += gateway.allowed_hosts
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in hosts))


check_section("gateway", settle)
