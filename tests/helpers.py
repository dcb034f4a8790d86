"""Test helpers: the herd launcher (shared with the benchmark: ``bench.herd``), blocking and
async clients, and polling."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

from backend.protocol import IAmAt

# The benchmark launches herds the same way: one launcher, bench.herd.Herd.
from bench.herd import NAMES, SECRET, Herd, HerdError
from bench.net import ask, converse, free_ports, listening, listening_async, poll, poll_async

__all__ = [
    "NAMES",
    "REPO",
    "SECRET",
    "Herd",
    "HerdError",
    "ask",
    "converse",
    "free_ports",
    "healthy",
    "iamat",
    "listening",
    "listening_async",
    "poll",
    "poll_async",
    "until_synced",
]

REPO = Path(__file__).resolve().parent.parent


def healthy(port: int) -> bool:
    """The gateway on ``port`` answers /healthz with 200 (it is subscribed to the herd)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def iamat(client: str, location: str = "+34.068930-118.445127", when: float | None = None) -> bytes:
    stamp = f"{time.time() if when is None else when:.9f}"
    return IAmAt(client, location, stamp).encode()


async def until_synced(client: Any) -> None:
    """Wait until the gateway under aiohttp's test ``client`` has its herd's snapshot."""
    from gateway.keys import FEED

    await asyncio.wait_for(client.app[FEED].synced.wait(), 10)
