"""Contract test: every operation in /api/v1/openapi.json answers as the document says.

Schemathesis generates requests from the served OpenAPI document (valid and invalid ones) and
checks each response: status documented, body matching its schema, no server errors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Herd, healthy, iamat, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_api_matches_its_openapi_document(tmp_path: Path) -> None:
    # A report's time may be at most max_future ahead of the clock: a bound that moves while
    # the test runs, which no served schema can state exactly. Pushed past the year 9999, the
    # schema's bound is the fixed one (max_future itself: tests/test_hostile_gateway.py).
    # History on: its operation answers 503 with it off, which the contract test counts as a
    # server error.
    extra = "[limits]\nmax_future = 1e12\n[history]\nenabled = true\n"
    # Whether a GPX or GeoJSON file imports (each point with a time, within retention, not
    # ahead of the clock) is more than JSON Schema can say: a schema-valid body may be
    # refused with 400 naming its bad point, and nothing else is allowed past the usual.
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-operation-id = "importHistory"\n'
        "checks.positive_data_acceptance.expected-statuses = "
        '["2xx", "400", "401", "403", "404", "409", "429", "5xx"]\n'
    )
    with Herd(tmp_path, extra=extra) as herd:
        herd.wait_links()
        herd.ask("Riley", iamat("known-client"))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "backend", "gateway", "--config", str(herd.config), "--quiet"]
        )
        try:
            poll(lambda: healthy(herd.gateway_port), 15, "the gateway")
            url = f"http://127.0.0.1:{herd.gateway_port}"
            result = subprocess.run(
                [
                    str(Path(sys.executable).with_name("schemathesis")),
                    "run",
                    f"{url}/api/v1/openapi.json",
                    "--checks",
                    "all",
                    "--max-examples",
                    "30",
                    "--seed",
                    "131",
                    "--request-timeout",
                    "10",
                    "--generation-database",
                    "none",
                ],
                capture_output=True,
                text=True,
                timeout=240,
                cwd=tmp_path,
            )
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    (tmp_path / "schemathesis.txt").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[:6000]
    assert "Tested: 11" in result.stdout, result.stdout[-2000:]  # all eleven operations
