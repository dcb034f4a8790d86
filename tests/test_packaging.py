"""A non-editable install carries everything the gateway serves."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


def test_the_wheel_carries_templates_static_files_and_the_command(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("herd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in [
        "gateway/templates/index.html",
        "gateway/templates/api.html",
        "gateway/static/map.js",
        "gateway/static/labels.js",
        "gateway/static/api-docs.js",
        "gateway/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "gateway/static/vendor/swagger-ui/LICENSE",
        "gateway/static/vendor/leaflet/leaflet.js",
        "gateway/static/vendor/leaflet/LICENSE",
        "gateway/static/vendor/leaflet.markercluster/leaflet.markercluster.js",
        "gateway/static/vendor/leaflet.markercluster/LICENSE",
        "gateway/static/vendor/world-atlas/countries-110m.json",
        "gateway/static/icons/locality.svg",
        "backend/protocol/__init__.py",
        "backend/protocol/_parse.py",
        "backend/py.typed",
        "bench/cli.py",
        "bench/baselines/echo.js",
    ]:
        assert path in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "herd = backend.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
