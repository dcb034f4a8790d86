"""The ``herd`` command as an operator runs it: ``herd up``, ``herd server``, config errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import NAMES, REPO, Herd, ask, healthy, listening, poll

from backend.config import ConfigError, default_config, load_config

HERD = [sys.executable, "-m", "backend"]


def pid_of(port: int) -> int | None:
    try:
        reply = ask(port, b"STATUS\n")
    except OSError:  # not listening, or killed mid-answer
        return None
    return int(json.loads(reply.removeprefix(b"STATUS "))["pid"])


def test_herd_up_runs_restarts_and_stops_the_whole_herd(tmp_path: Path) -> None:
    herd = Herd(tmp_path)  # only for its config file and ports; `herd up` runs the servers
    up = subprocess.Popen(
        [*HERD, "up", "--config", str(herd.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        printed = []
        while not (line := up.stdout.readline()).startswith("Press Ctrl-C"):
            assert line, f"herd up ended early: {''.join(printed)}"
            printed.append(line)
        out = "".join(printed)
        for name, port in herd.ports.items():
            assert re.search(rf"{name}\s+tcp://127\.0\.0\.1:{port}\n", out), out
            assert listening(port)
        assert str(tmp_path / "logs") in out
        assert f"map        http://127.0.0.1:{herd.gateway_port}/\n" in out
        poll(lambda: healthy(herd.gateway_port), 15, "the gateway to subscribe to the herd")

        # A server that dies is restarted, and rejoins.
        victim = herd.ports["Juzang"]
        old = pid_of(victim)
        os.kill(old, signal.SIGKILL)
        poll(lambda: pid_of(victim) not in (old, None), 15, "Juzang to be restarted")
        herd.wait_links()
        reply = ask(herd.ports["Riley"], b"IAMAT after-restart +1+1 1700000000\n")
        herd.wait_record("Campbell", "after-restart", reply)

        children = [pid_of(port) for port in herd.ports.values()]
        assert None not in children
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=15) == 0
        # It stops in order and quietly: no child reports a failure on the way.
        rest = up.stdout.read()
        stopping = rest[rest.index("stopping the gateway") :]
        assert "WARNING" not in stopping and "Traceback" not in stopping, stopping
        assert stopping.endswith("herd stopped\n"), stopping
        for port in [*herd.ports.values(), herd.gateway_port]:
            assert not listening(port)
        for pid in children:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if up.poll() is None:
            up.kill()
        up.wait()
        if up.stdout is not None:
            up.stdout.close()


def test_the_readme_nc_line_is_answered_byte_for_byte(tmp_path: Path) -> None:
    nc = shutil.which("nc")
    assert nc, "nc is needed (netcat-openbsd): .ci/run installs it"
    with Herd(tmp_path) as herd:
        herd.wait_links()
        line = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1614209128.918963997\n"
        out = subprocess.run(
            f"printf '{line.strip()}\\n' | nc -q1 127.0.0.1 {herd.ports['Riley']}",
            shell=True,
            capture_output=True,
            check=True,
        ).stdout
        assert re.fullmatch(
            rb"AT Riley \+[0-9]+\.[0-9]{9} kiwi\.cs\.ucla\.edu \+34\.068930-118\.445127 "
            rb"1614209128\.918963997\n",
            out,
        ), out
        herd.wait_record("Bernard", "kiwi.cs.ucla.edu", out)


def bad_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


SERVERS = "[servers.A]\nport = 1\n[servers.B]\nport = 2\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('links = [["A", "Nowhere"]]\n' + SERVERS, "goes to 'Nowhere', which is not in [servers]"),
        ("links = []\n" + SERVERS.replace("port = 2", "port = 1"), "duplicate port 1"),
        ('links = [["A", "A"]]\n' + SERVERS, "joins a server to itself"),
        ("links = []\n", "at least one [servers.NAME]"),
        ("links = [\n", "not valid TOML"),
        ("links = []\n" + SERVERS + "[places]\nprovider = 'bing'\n", "provider must be"),
        ("links = []\n" + SERVERS + "[places]\nprovider = 'google'\n", "needs a key"),
        ("links = []\n" + SERVERS + "[limits]\nmax_line_bytes = -1\n", "max_line_bytes must be"),
        ("links = []\nsurprise = 1\n" + SERVERS, "unknown top-level key"),
        ("links = []\n" + SERVERS + "[log_rotation]\nmax_bytes = -1\n", "max_bytes must be"),
        ("links = []\n" + SERVERS + "[log_rotation]\nbackups = 0\n", "backups must be"),
    ],
)
def test_config_errors_are_reported_before_anything_starts(
    tmp_path: Path, text: str, message: str
) -> None:
    path = bad_config(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={})
    result = subprocess.run(
        [*HERD, "up", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")},
    )
    assert result.returncode == 2
    assert "config error" in result.stderr and message in result.stderr
    assert str(path) in result.stderr


def test_unknown_server_name_is_a_config_error(tmp_path: Path) -> None:
    herd = Herd(tmp_path)
    result = subprocess.run(
        [*HERD, "server", "Clark", "--config", str(herd.config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown server 'Clark'" in result.stderr and "Riley" in result.stderr


def test_the_built_in_herd_and_the_example_file_agree() -> None:
    built_in = default_config(env={})
    example = load_config(REPO / "docs" / "herd.example.toml", env={})
    assert list(built_in.servers) == list(NAMES)
    assert built_in.servers == example.servers
    assert built_in.links == example.links
    assert built_in.neighbours("Bernard") == ("Jaquez", "Juzang", "Campbell")
    assert example.logs_dir == REPO / "docs" / "logs"


def test_a_key_in_the_environment_selects_google_unless_the_config_says_otherwise(
    tmp_path: Path,
) -> None:
    env = {"GOOGLE_PLACES_API_KEY": "k", "GOOGLE_PLACES_URL": "http://127.0.0.1:9/x"}
    assert default_config(env=env).places.provider == "google"
    assert default_config(env=env).places.google_url == "http://127.0.0.1:9/x"
    pinned = bad_config(tmp_path, "links = []\n" + SERVERS + "[places]\nprovider = 'embedded'\n")
    assert load_config(pinned, env=env).places.provider == "embedded"
    assert default_config(env={}).places.provider == "embedded"


def test_the_gateway_log_is_rotated_past_its_size(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    rotation = "[log_rotation]\nmax_bytes = 2048\nbackups = 1\n"
    with Herd(tmp_path, names=["Riley"], links=[], extra=rotation) as herd:
        err = open(tmp_path / "gateway.stderr", "wb")  # noqa: SIM115 - lives with the process
        gateway = subprocess.Popen(
            [*HERD, "gateway", "--config", str(herd.config), "--quiet"], stdout=err, stderr=err
        )
        err.close()
        logs = tmp_path / "logs"
        url = f"http://127.0.0.1:{herd.gateway_port}/healthz"

        def request() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
            except urllib.error.HTTPError:
                pass  # logged all the same
            except OSError:
                return False  # not listening yet
            return (logs / "gateway.log.2").exists() or (logs / "gateway.log.1").exists()

        try:
            poll(request, 30, "the gateway's access log to fill a file")
            for _ in range(40):  # another file's worth: the oldest is dropped
                request()
            assert (logs / "gateway.log.1").stat().st_size <= 2048
            assert not (logs / "gateway.log.2").exists(), "more old files kept than backups"
            assert "GET /healthz" in (logs / "gateway.log").read_text()
        finally:
            gateway.terminate()
            gateway.wait(timeout=15)


def test_herd_config_prints_the_herd_it_describes(tmp_path: Path) -> None:
    herd = Herd(tmp_path, extra="[log_rotation]\nmax_bytes = 1000000\nbackups = 2\n")
    out = subprocess.run(
        [*HERD, "config", "--config", str(herd.config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for name, port in herd.ports.items():
        neighbours = ", ".join(herd.neighbours(name))
        assert re.search(rf"{name}\s+127\.0\.0\.1:{port}\s+neighbours: {neighbours}\n", out), out
    assert f"logs:   {tmp_path / 'logs'} (rotated at 1,000,000 bytes, 2 kept)\n" in out
    assert f"data:   {tmp_path / 'data'}\n" in out
