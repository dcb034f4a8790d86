"""Shared test settings: one seed for every randomised test, printed with a failure and settable
from the command line (``pytest --seed N``), so that any failure replays."""

from __future__ import annotations

import random
import time

import pytest


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
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed and "rng" in getattr(item, "fixturenames", ()):
        report.sections.append(
            ("randomness", f"replay with: pytest '{item.nodeid}' --seed {item.config.stash[SEED]}")
        )
    return report
