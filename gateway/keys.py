"""Typed application keys: every long-lived object the gateway's handlers share."""

from __future__ import annotations

import asyncio

from aiohttp import web

from backend.config import HerdConfig

from .access import Guards
from .auth import Access
from .herd_client import HerdClient, Server
from .live import LiveFeed
from .metrics import Metrics
from .place_labels import PlaceLabels

__all__ = [
    "ACCESS",
    "CONFIG",
    "FEED",
    "GUARDS",
    "HERD",
    "IMPORTS",
    "LABELS",
    "METRICS",
    "SERVERS",
    "SOCKETS",
]

CONFIG = web.AppKey("config", HerdConfig)
SERVERS = web.AppKey("servers", list[Server])
HERD = web.AppKey("herd", HerdClient)
FEED = web.AppKey("feed", LiveFeed)
METRICS = web.AppKey("metrics", Metrics)
SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
ACCESS = web.AppKey("access", Access)
GUARDS = web.AppKey("guards", Guards)
# History imports being read and parsed (gateway/history_write.py, MAX_IMPORTS at a time).
IMPORTS = web.AppKey("imports", asyncio.Semaphore)
LABELS = web.AppKey("labels", PlaceLabels)
