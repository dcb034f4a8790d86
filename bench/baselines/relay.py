"""Baseline: one hop of a bare relay chain, the least a flooding server can do.

A chain of three hops is as long as the herd's path Riley -> Juzang -> Campbell. Every line a
hop receives is forwarded at once, unchanged, to the next hop (``--next PORT``) and to this
hop's subscribers. The first hop (``--reply``) also answers the sender, with the line behind
the same 16-byte prefix as echo.py, and forwards that prefixed line: the herd's reply and the
record it floods are that long too. A connection whose first line is ``SUBSCRIBE`` gets
``SYNCED 0`` and then every line, like the herd's SUBSCRIBE. No parsing, no logging.

    python relay.py [--port 0] [--next PORT] [--reply] [--uvloop]   prints its port when ready
"""

from __future__ import annotations

import argparse
import asyncio
import sys

PREFIX = b"AT Echo +0.0000 "  # as in echo.py


class Hop:
    def __init__(self, reply: bool) -> None:
        self.reply = reply
        self.next: asyncio.StreamWriter | None = None
        self.subscribers: set[asyncio.StreamWriter] = set()

    async def connect(self, port: int) -> None:
        _, self.next = await asyncio.open_connection("127.0.0.1", port)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = True
            while line := await reader.readline():
                if first and line == b"SUBSCRIBE\n":
                    writer.write(b"SYNCED 0\n")
                    self.subscribers.add(writer)
                    continue
                first = False
                if self.reply:
                    line = PREFIX + line
                    writer.write(line)
                if self.next is not None:
                    self.next.write(line)
                for subscriber in self.subscribers:
                    subscriber.write(line)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.subscribers.discard(writer)
            writer.close()


async def main(port: int, next_port: int | None, reply: bool) -> None:
    hop = Hop(reply)
    if next_port is not None:
        await hop.connect(next_port)
    server = await asyncio.start_server(hop.serve, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--next", type=int, default=None, help="port of the next hop")
    parser.add_argument("--reply", action="store_true", help="answer the sender (first hop)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, like the herd")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(main(args.port, args.next, args.reply))
    except KeyboardInterrupt:
        sys.exit(0)
