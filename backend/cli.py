"""The ``herd`` command: parses arguments and calls into the packages, nothing more."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import gateway.settings  # noqa: F401 - every command checks [gateway] by the gateway's rules

from .config import ConfigError, HerdConfig, load_config

log = logging.getLogger("herd.cli")

# Whatever a server or gateway creates (logs and their rotations, journals, caches) is its
# user's alone: the journal holds every location, the logs every line in and out.
PRIVATE_UMASK = 0o077


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the standard loop."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: the one place where the herd's commands install
    signal handlers."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    await stop_on_signals().wait()


# The cycle collector's young generation is collected every GC_YOUNG allocations instead of
# Python's 700: every IAMAT allocates a handful of short-lived objects, none in a cycle, so
# the default collects every hundred-odd IAMATs for nothing (5% of the hot path, measured).
# The gateway's history pages allocate tens of thousands of tuples each, none in a cycle.
GC_YOUNG = 10_000


async def _serve(config: HerdConfig, name: str) -> int:
    from .server import HerdServer

    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    server = HerdServer(config, name)
    try:
        await server.start()
        # The records recovered from the journal live as long as the server: keep them out
        # of the collector's full passes (some 60 ms per 100,000 records, measured).
        gc.freeze()
    except OSError as exc:
        log.error(
            "%s cannot listen on %s:%d: %s",
            name,
            server.address.host,
            server.address.port,
            exc.strerror,
        )
        return 1
    await wait_for_signal()
    await server.close()
    return 0


def cmd_server(args: argparse.Namespace, config: HerdConfig) -> int:
    from .logs import setup_logging

    os.umask(PRIVATE_UMASK)
    config.server(args.name)  # unknown name: ConfigError before anything starts
    listener = setup_logging(
        config.logs_dir / f"{args.name}.log", logging.WARNING if args.quiet else logging.INFO
    )
    try:
        return run_async(_serve(config, args.name))
    finally:
        listener.stop()


async def _gateway(config: HerdConfig) -> int:
    from aiohttp import web

    from gateway.app import create_app

    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    gateway = config.gateway
    runner = web.AppRunner(create_app(config), access_log=logging.getLogger("herd.gateway.access"))
    await runner.setup()
    try:
        await web.TCPSite(runner, gateway.host, gateway.port, backlog=1024).start()
    except OSError as exc:
        log.error("gateway cannot listen on %s:%d: %s", gateway.host, gateway.port, exc.strerror)
        await runner.cleanup()
        return 1
    # The modules, the application and its routes live as long as the gateway: out of the
    # collector's full passes, which otherwise walk them all (some 11 ms for the 54,000
    # objects of a started gateway, measured) every few large reads, such as a history page
    # of 8,640 points with its tens of thousands of short-lived tuples.
    gc.freeze()
    log.info("gateway on http://%s:%d/", gateway.host, gateway.port)
    await wait_for_signal()
    await runner.cleanup()
    return 0


def cmd_gateway(args: argparse.Namespace, config: HerdConfig) -> int:
    from .logs import setup_logging

    os.umask(PRIVATE_UMASK)
    level = logging.WARNING if args.quiet else logging.INFO
    listener = setup_logging(config.logs_dir / "gateway.log", level, config.log_rotation)
    try:
        return run_async(_gateway(config))
    finally:
        listener.stop()


def cmd_up(args: argparse.Namespace, config: HerdConfig) -> int:
    from .supervisor import supervise

    os.umask(PRIVATE_UMASK)  # the servers and the gateway it starts inherit it
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    async def up() -> int:
        return await supervise(config, args.config, stop_on_signals())

    return run_async(up())


def cmd_config(args: argparse.Namespace, config: HerdConfig) -> int:
    print(f"config: {config.source or '(built-in herd)'}")
    for name, address in config.servers.items():
        neighbours = ", ".join(config.neighbours(name))
        print(f"  {name:<10} {address.host}:{address.port}  neighbours: {neighbours}")
    print(f"places: {config.places.provider}")
    rotation = config.log_rotation
    kept = (
        f"rotated at {rotation.max_bytes:,} bytes, {rotation.backups} kept"
        if rotation.max_bytes
        else "not rotated"
    )
    print(f"logs:   {config.logs_dir} ({kept})")
    print(f"data:   {config.data_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herd", description="A herd of location servers.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, help: str, func: Callable[[argparse.Namespace, HerdConfig], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "--config", metavar="FILE", help="herd config (TOML); default: the built-in herd"
        )
        p.set_defaults(func=func)
        return p

    server = command("server", "Run one server in the foreground.", cmd_server)
    server.add_argument("name", help="the server's ID, e.g. Riley")
    server.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    gateway = command("gateway", "Run the HTTP/WebSocket gateway and live map.", cmd_gateway)
    gateway.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    command("up", "Run the whole herd and the gateway on this machine, one process each.", cmd_up)
    command("config", "Check a config file and print the herd it describes.", cmd_config)
    sub.add_parser(
        "bench",
        help="Benchmark the herd against bare baselines on loopback (herd bench --help).",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmark has its own options (bench/cli.py); it needs no herd config.
        from bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        return int(args.func(args, config))
    except ConfigError as exc:
        print(f"herd: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
