"""Shared test settings and fixtures.

- One seed for every randomised test (``rng``), printed with a failure and settable from the
  command line (``pytest --seed N``), so that any failure replays.
- ``herd``: a module's herd of five real servers (a module may set ``HERD_GATEWAY`` to extra
  ``[gateway]`` lines, ``HERD_EXTRA`` to more tables), and ``client``: the gateway app for it
  under aiohttp's test client.
- ``many_files``: a higher limit on open files for one test, restored after it.
- System tests of many seconds (chaos, network namespaces, browsers, the benchmark, packaging,
  the API contract) are marked ``slow``: they run by default and in ``.ci/run``; ``-m "not slow"``
  skips them.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from helpers import Herd

from backend.config import load_config
from gateway.app import create_app


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seed",
        type=int,
        default=None,
        help="seed of the randomised tests (default: a new one each run, printed on failure)",
    )


def pytest_configure(config: pytest.Config) -> None:
    seed = config.getoption("--seed")
    config.stash[SEED] = seed if seed is not None else time.time_ns() % 1_000_000_007


SEED = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"randomised tests: --seed {config.stash[SEED]}"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A random generator seeded from the run's seed and the test's name: the same test with
    the same ``--seed`` makes the same choices, whatever else runs."""
    seed = request.config.stash[SEED]
    return random.Random(f"{seed}:{request.node.nodeid}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed and "rng" in getattr(item, "fixturenames", ()):
        report.sections.append(
            ("randomness", f"replay with: pytest '{item.nodeid}' --seed {item.config.stash[SEED]}")
        )
    return report


@pytest.fixture
def many_files() -> Iterator[None]:
    """RLIMIT_NOFILE raised to 8,192 (or the hard limit) for the test: thousands of sockets,
    at both ends. The limit is the whole process's, so it is put back after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def herd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Herd]:
    """Five real servers for the module's tests, their links up."""
    gateway = getattr(request.module, "HERD_GATEWAY", "")
    extra = getattr(request.module, "HERD_EXTRA", "")
    name = request.module.__name__.rpartition(".")[2]
    with Herd(tmp_path_factory.mktemp(name), gateway=gateway, extra=extra) as started:
        started.wait_links()
        yield started


@pytest.fixture
async def client(herd: Herd, aiohttp_client: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """The gateway for ``herd``, in this test's event loop."""
    yield await aiohttp_client(create_app(load_config(herd.config, env={})))
