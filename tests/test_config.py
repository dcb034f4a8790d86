"""Loading a config by its types: every key of every section is checked, and a refusal names
the key, what it accepts and the value; the gateway's rules run on every command. No sockets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import ConfigError, HerdConfig, load_config

SERVERS = "[servers.A]\nport = 1\n[servers.B]\nport = 2\n"
SECTIONS = {
    f.name: f.default_factory
    for f in dataclasses.fields(HerdConfig)
    if dataclasses.is_dataclass(f.default_factory)
}


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herd.toml"
    path.write_text(f'links = [["A", "B"]]\n{text}\n{SERVERS}')
    return path


def test_the_sections_are_the_dataclass_fields_of_herd_config() -> None:
    assert set(SECTIONS) == {
        "places",
        "limits",
        "peers",
        "gateway",
        "durability",
        "history",
        "log_rotation",
    }


@pytest.mark.parametrize(
    ("section", "key"),
    [(name, f.name) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)],
)
def test_every_key_of_every_section_refuses_a_value_of_another_type(
    tmp_path: Path, section: str, key: str
) -> None:
    default = getattr(SECTIONS[section](), key)
    wrong = "1" if isinstance(default, bool) else "true"  # TOML: an integer, or a boolean
    with pytest.raises(ConfigError) as error:
        load_config(config(tmp_path, f"[{section}]\n{key} = {wrong}"), env={})
    message = str(error.value)
    assert f"[{section}] {key} must be " in message or f"[{section}.{key}] must be " in message
    shown = "tokens" not in key  # a token is never echoed
    assert message.endswith(f", got {wrong.title() if wrong == 'true' else wrong}") == shown


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_section_refuses_an_unknown_key(tmp_path: Path, section: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[{section}\]: unknown key\(s\): surprise"):
        load_config(config(tmp_path, f"[{section}]\nsurprise = 1"), env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[limits]\nmax_line_bytes = 0",
            "[limits] max_line_bytes must be a positive integer, got 0",
        ),
        (
            "[limits]\nidle_timeout = 'x'",
            "[limits] idle_timeout must be a positive number of seconds",
        ),
        ("[limits]\nconnections_per_address = -1", "must be 0 (off) or a positive integer, got -1"),
        ("[peers]\nheartbeat = 0", "[peers] heartbeat must be a positive number of seconds, got 0"),
        (
            "[durability]\nretention = -5",
            "retention must be seconds >= 0 (0 keeps records forever)",
        ),
        ("[places]\ngazetteer = 'cities7'", "gazetteer must be one of 'cities500', 'cities1000'"),
        ("[gateway]\nport = 70000", "[gateway] port must be an integer in 0..65535"),
        ("[gateway]\nrate_per_client = inf", "[gateway] rate_per_client must be a finite number"),
        ("[paths]\nlogs = ''", "[paths] logs must be a non-empty path string"),
        ("[tls]\ncert = 'a'", "[tls] needs key"),
        (
            '[servers.A.dial]\nB = "nohost"',
            '[servers.A.dial] B must be "host:port" (port 1..65535)',
        ),
        ("places = 5", "[places] must be a table, got 5"),
    ],
)
def test_a_refusal_names_the_key_what_it_accepts_and_the_value(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config(tmp_path, text), env={})
    assert message in str(error.value)


def test_a_server_table_error_names_the_server(tmp_path: Path) -> None:
    path = tmp_path / "herd.toml"
    path.write_text("links = []\n[servers.Riley]\nport = 0\n")
    with pytest.raises(
        ConfigError, match=r"\[servers\.Riley\] port must be an integer in 1\.\.65535, got 0"
    ):
        load_config(path, env={})


def test_the_environment_wins_over_the_file_for_google(tmp_path: Path) -> None:
    path = config(tmp_path, "[places]\ngoogle_url = ''")
    places = load_config(path, env={"GOOGLE_PLACES_API_KEY": "k"}).places
    assert places.provider == "google" and places.google_api_key == "k"
    assert places.google_url.startswith("https://maps.googleapis.com/")
    with pytest.raises(ConfigError, match="google_url must be an http"):
        load_config(path, env={"GOOGLE_PLACES_URL": "ftp://x"})


@pytest.mark.parametrize("command", [["config"], ["server", "A"], ["up"]])
def test_every_command_refuses_a_bad_gateway_setting(tmp_path: Path, command: list[str]) -> None:
    path = config(tmp_path, '[gateway]\nread_tokens = ["short"]')
    result = subprocess.run(
        [sys.executable, "-m", "backend", *command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "config error" in result.stderr and "[gateway] read_tokens must be" in result.stderr
