"""``herd up``: run every server of the herd on this machine, one process each; restart a
server that dies; stop them all on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import time

from .config import HerdConfig, ServerAddress

__all__ = ["supervise"]

log = logging.getLogger("herd.up")

# A child that ran this long before dying is restarted at once; one that dies sooner is
# restarted with a doubling delay up to RESTART_MAX, so a crash loop (say, a port taken)
# does not spin.
STABLE_AFTER = 10.0
RESTART_MAX = 5.0
# Seconds the children get to exit on SIGTERM before they are killed.
STOP_GRACE = 5.0
GATEWAY = "gateway"
# Seconds to wait for a new child to accept connections before reporting it.
START_WAIT = 10.0


def _die_with_parent() -> None:
    # Linux: SIGTERM the child if `herd up` itself dies, so no server is orphaned.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child:
    def __init__(self, config: HerdConfig, config_path: str | None, name: str) -> None:
        self.name = name
        if name == GATEWAY:
            self.address = ServerAddress(config.gateway.host, config.gateway.port)
            self.argv = [sys.executable, "-m", "backend", "gateway", "--quiet"]
        else:
            self.address = config.server(name)
            self.argv = [sys.executable, "-m", "backend", "server", name, "--quiet"]
        if config_path is not None:
            self.argv += ["--config", config_path]
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0

    async def spawn(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only `herd up`, which stops children in order.
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.started = time.monotonic()


async def _listening(host: str, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return True
    return False


async def _keep_running(child: _Child, stopping: asyncio.Event) -> None:
    delay = 0.5
    while True:
        assert child.proc is not None
        code = await child.proc.wait()
        if stopping.is_set():
            return
        ran = time.monotonic() - child.started
        delay = 0.0 if ran > STABLE_AFTER else min(max(delay * 2, 0.5), RESTART_MAX)
        log.warning(
            "%s exited (code %s) after %.1f s; restarting in %.1f s", child.name, code, ran, delay
        )
        await asyncio.sleep(delay)
        if stopping.is_set():
            return
        await child.spawn()


async def supervise(config: HerdConfig, config_path: str | None, stopping: asyncio.Event) -> int:
    """Run the herd until ``stopping`` is set (by SIGINT or SIGTERM); returns the exit
    status."""
    names = [*config.servers, GATEWAY]
    children = [_Child(config, config_path, name) for name in names]
    for child in children:
        await child.spawn()
    deadline = time.monotonic() + START_WAIT
    ready = await asyncio.gather(
        *(_listening(c.address.host, c.address.port, deadline) for c in children)
    )
    source = config.source or "built-in herd"
    print(f"herd up: {len(config.servers)} servers and the gateway ({source})")
    for child, ok in zip(children, ready, strict=True):
        state = "" if ok else "   (not answering yet: see its log)"
        scheme = "http" if child.name == GATEWAY else "tcp"
        print(f"  {child.name:<10} {scheme}://{child.address.host}:{child.address.port}{state}")
    gateway = children[-1].address
    print(f"  map        http://{gateway.host}:{gateway.port}/")
    print(f"  API docs   http://{gateway.host}:{gateway.port}/api/docs")
    print(f"  logs       {config.logs_dir}")
    print("Press Ctrl-C to stop.", flush=True)

    watchers = [asyncio.create_task(_keep_running(c, stopping)) for c in children]
    await stopping.wait()
    # The gateway first, so that it does not see its herd go; then every server at once (a
    # server logs a neighbour that closes cleanly as stopped, not as a failure).
    log.info("stopping the gateway")
    await _stop([c for c in children if c.name == GATEWAY])
    log.info("stopping the servers")
    await _stop([c for c in children if c.name != GATEWAY])
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    log.info("herd stopped")
    return 0


async def _stop(children: list[_Child]) -> None:
    """SIGTERM ``children``, and SIGKILL those still running after STOP_GRACE."""
    procs = [c.proc for c in children if c.proc is not None]
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    try:
        async with asyncio.timeout(STOP_GRACE):
            await asyncio.gather(*(p.wait() for p in procs))
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                log.warning("a child did not stop within %g s: killed", STOP_GRACE)
                proc.kill()
        await asyncio.gather(*(p.wait() for p in procs))
