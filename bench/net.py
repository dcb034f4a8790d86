"""Small clients and waits on loopback, blocking and async: whether a port listens, one whole
conversation with a server, and polling a condition until a deadline. The herd launcher and the
tests use them."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["ask", "converse", "free_ports", "listening", "listening_async", "poll", "poll_async"]

T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    """Ports the kernel just handed out as free (bound and released together, so distinct)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def listening_async(port: int) -> bool:
    try:
        async with asyncio.timeout(1):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def ask(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, and read until the server closes: a whole conversation."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


async def converse(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """``ask`` without blocking the event loop."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            writer.write_eof()
            return await reader.read()
        finally:
            writer.close()


def poll(
    check: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    error: type[Exception] = AssertionError,
) -> T:
    """Call ``check`` until it returns something truthy; raise ``error`` after ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@overload
async def poll_async(
    check: Callable[[], Awaitable[T]],
    timeout: float = ...,
    what: str = ...,
    error: type[Exception] = ...,
) -> T: ...


@overload
async def poll_async(
    check: Callable[[], T],
    timeout: float = ...,
    what: str = ...,
    error: type[Exception] = ...,
) -> T: ...


async def poll_async(
    check: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    error: type[Exception] = AssertionError,
) -> Any:
    """``poll`` in an event loop; ``check`` may be a plain or a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
