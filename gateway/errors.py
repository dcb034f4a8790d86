"""The gateway's one error type and one error envelope.

Every refusal the gateway answers (a bad report, a missing token, a rate past its limit, a bad
WebSocket command) is an :class:`ApiError`: a status, a message fit to show to the person or app
that sent the request, and the headers that go with it (``Retry-After``,
``WWW-Authenticate``). Every answer shows it the same way, :func:`envelope`:
``{"error": {"status": N, "message": "..."}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ApiError", "envelope"]


class ApiError(Exception):
    """A request the gateway refuses, and how it answers it."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return envelope(self.status, self.message)


def envelope(status: int, message: str) -> dict[str, Any]:
    """The JSON every error answer holds (HTTP bodies; the ``error`` of a WebSocket reply)."""
    return {"error": {"status": status, "message": message}}
