"""Baseline: the least a line server can do, on asyncio streams (or uvloop with ``--uvloop``).

Each line is answered with the same line behind a fixed 16-byte prefix: the herd's AT reply to
an IAMAT is the IAMAT line less "IAMAT " plus "AT Riley +0.123456789 ", 16 bytes longer, so
both servers write the same number of bytes for the same traffic. No parsing, no logging.

    python echo.py [--port 0] [--uvloop]      prints the port on stdout once it listens
"""

from __future__ import annotations

import argparse
import asyncio
import sys

# 16 bytes, like the difference in length between an IAMAT line and the herd's AT reply.
PREFIX = b"AT Echo +0.0000 "


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(PREFIX + line)
            # Like the herd: drain only when the client is not reading fast enough.
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
