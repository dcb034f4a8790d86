"""Chaos: five servers with history on, clients reporting to random servers, while servers
are killed -9 and restarted, links are cut and healed, and a hostile client sends every class
of poison line the protocol's bounds refuse. Afterwards every server must hold exactly the
newest acknowledged record of every client (zero lost, zero older, nothing of the hostile
client's) and, in its history, every acknowledged point of every client and no point that
was never sent.

The run is random; ``pytest --seed N`` replays a run (the seed is printed with a failure)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import NAMES, Herd

from backend.config import DEFAULT_LINKS
from backend.protocol import End, History, parse_line
from bench.linkproxy import Links

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLIENTS = 40
CHAOS_SECONDS = 12.0
EVENT_EVERY = 0.6  # seconds between chaos events
MAX_DOWN = 2  # servers down at once
HISTORY_ON = "[history]\nenabled = true\n"
# Seconds for every server to hold every acknowledged record and point once all is healed.
CONVERGE_LIMIT = 60.0
# Clients' times start an hour ago: within history's retention, and never in the future.
START = int(time.time()) - 3_600


@dataclass
class Client:
    name: str
    next_time: int = START
    acked: list[tuple[int, bytes]] = field(default_factory=list)
    unsure: set[int] = field(default_factory=set)  # sent, connection lost before the reply

    def points(self) -> set[tuple[str, str]]:
        """The (location, time) of every acknowledged point, from its AT reply."""
        return {(r.split()[4].decode(), r.split()[5].decode()) for _, r in self.acked}


async def report(
    herd: Herd, rng: random.Random, client: Client, alive: list[str], stats: dict[str, int]
) -> None:
    stamp = client.next_time
    client.next_time += 1
    line = f"IAMAT {client.name} +{rng.uniform(0, 80):.6f}-{rng.uniform(0, 170):.6f} {stamp}\n"
    server = rng.choice(alive)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", herd.ports[server])
    except OSError:
        stats["refused"] += 1
        return  # never reached a server: not sent at all
    try:
        writer.write(line.encode())
        async with asyncio.timeout(3):
            reply = await reader.readuntil(b"\n")
        client.acked.append((stamp, reply))
        stats["acked"] += 1
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        client.unsure.add(stamp)
        stats["unsure"] += 1
    finally:
        writer.close()


def hostile_lines(victim: str) -> list[bytes]:
    """One line of each class that the bounds refuse, aimed at a real client's ID."""
    now = time.time()
    location = "+34.068930-118.445127"
    return [
        f"IAMAT {'x' * 8140} {location} {now}\n".encode(),  # its AT line: over 8 KiB
        f"IAMAT {victim} {location} {'1' * 4000}\n".encode(),  # 4,000 digits
        f"IAMAT {victim} {location} 1{'0' * 400}\n".encode(),  # a float's inf
        f"IAMAT {victim} {location} 32503680000\n".encode(),  # year 3000
        f"IAMAT {victim} {location} {now + 86400:.9f}\n".encode(),  # a day ahead
        f"WHATSAT {victim} 10 {'1' * 5000}\n".encode(),  # past int()'s digit limit
        f"AT Riley +0.000000001 {victim} {location} 99999999999\n".encode(),  # forged
        b"IAMAT \xff\xfe +1+1 1\n",  # not UTF-8
    ]


async def hostile(herd: Herd, rng: random.Random, down: set[str], stats: dict[str, int]) -> None:
    """Send every poison line, to random servers, until cancelled; each must get '? '."""
    while True:
        alive = [n for n in NAMES if n not in down]
        line = rng.choice(hostile_lines(f"chaos-{rng.randrange(CLIENTS)}"))
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", herd.ports[rng.choice(alive)]
            )
        except OSError:
            continue
        try:
            writer.write(line)
            writer.write_eof()
            async with asyncio.timeout(3):
                reply = await reader.read()
        except (OSError, TimeoutError):
            reply = b""  # the server was killed meanwhile
        finally:
            writer.close()
        if reply:
            assert reply.startswith(b"? "), (line[:80], reply[:80])
            stats["hostile"] += 1
        await asyncio.sleep(0.005)


async def snapshot(port: int) -> dict[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(b"SUBSCRIBE\n")
        records = {}
        while not (line := await reader.readuntil(b"\n")).startswith(b"SYNCED "):
            records[line.split()[3].decode()] = line
        return records
    finally:
        writer.close()


def problems(client: Client, held: bytes | None) -> str | None:
    """Why what a server holds for ``client`` is wrong, or None if it is right."""
    newest_time, newest = max(client.acked)
    if held is None:
        return "lost"
    held_time = int(held.split()[5])
    if held == newest:
        return None
    if held_time > newest_time and held_time in client.unsure:
        return None  # a newer report whose reply was cut off: it may well have been stored
    return f"holds {held!r}, newest acknowledged is {newest!r}"


async def history_problems(herd: Herd, name: str, client: Client) -> str | None:
    """Why the points server ``name`` holds of ``client`` are wrong, or None if they are right:
    every acknowledged point must be there, and nothing that was never sent."""
    ask = History(client.name, (START - 1) * 10**9, (client.next_time + 1) * 10**9, 10_000)
    lines = (await herd.ask_async(name, ask.encode())).splitlines(keepends=True)
    if not lines or parse_line(lines[-1]) != End(len(lines) - 1):
        return f"HISTORY answered {lines[-1:]!r}"
    held = {(f[4].decode(), f[5].decode()) for f in (line.split() for line in lines[:-1])}
    acked = client.points()
    missing = sorted(acked - held)
    # A point whose reply was cut off may or may not have been stored: it may be held.
    unknown = sorted(p for p in held - acked if int(p[1]) not in client.unsure)
    if missing or unknown:
        return f"{len(missing)} acknowledged points missing {missing[:3]}, unknown {unknown[:3]}"
    return None


async def converge(herd: Herd, clients: list[Client]) -> tuple[list[str], bool, float]:
    """Wait until every server holds the newest acknowledged record of every client, all
    alike, and every acknowledged point; returns what is still wrong after CONVERGE_LIMIT
    seconds, whether the servers' records agree, and the seconds it took."""
    started = time.monotonic()
    while True:
        held = {name: await snapshot(herd.ports[name]) for name in NAMES}
        wrong = [
            f"{name}: {client.name}: {why}"
            for name in NAMES
            for client in clients
            if client.acked and (why := problems(client, held[name].get(client.name)))
        ]
        agree = all(held[name] == held[NAMES[0]] for name in NAMES)
        if not wrong and agree:
            wrong = [
                f"{name}: {client.name}'s history: {why}"
                for name in NAMES
                for client in clients
                if (why := await history_problems(herd, name, client))
            ]
        if (not wrong and agree) or time.monotonic() - started > CONVERGE_LIMIT:
            return wrong, agree, time.monotonic() - started
        await asyncio.sleep(0.1)


async def test_chaos_converges_to_every_acknowledged_record_and_point(
    tmp_path: Path, rng: random.Random
) -> None:
    # The relays listen first, so the ports the herd then picks can never be one of theirs.
    links = await Links(DEFAULT_LINKS).start()
    dialers = sorted(links.proxies)
    herd = Herd(tmp_path, extra=HISTORY_ON)
    links.route(herd)
    events: list[str] = []
    stats = {"acked": 0, "unsure": 0, "refused": 0, "hostile": 0}
    clients = [Client(f"chaos-{i}") for i in range(CLIENTS)]
    try:
        await herd.start_async(*NAMES)
        await herd.wait_links_async()
        down: set[str] = set()
        cut: set[tuple[str, str]] = set()

        async def traffic(stop: asyncio.Event) -> None:
            while not stop.is_set():
                alive = [n for n in NAMES if n not in down]
                await asyncio.gather(*(report(herd, rng, c, alive, stats) for c in clients))

        stop = asyncio.Event()
        sender = asyncio.create_task(traffic(stop))
        attacker = asyncio.create_task(hostile(herd, rng, down, stats))
        deadline = time.monotonic() + CHAOS_SECONDS
        # A kill and a cut for sure, then whatever chance brings.
        script = ["kill", "cut"]
        while time.monotonic() < deadline:
            await asyncio.sleep(EVENT_EVERY)
            action = script.pop(0) if script else rng.choice(["kill", "restart", "cut", "heal"])
            if action == "kill" and len(down) < MAX_DOWN:
                name = rng.choice([n for n in NAMES if n not in down])
                down.add(name)
                await herd.kill_async(name)
                events.append(f"kill -9 {name}")
            elif action == "restart" and down:
                name = rng.choice(sorted(down))
                await herd.start_async(name)
                down.discard(name)
                events.append(f"restart {name}")
            elif action == "cut":
                pair = rng.choice(dialers)
                links.cut(pair)
                cut.add(pair)
                events.append(f"cut {'-'.join(pair)}")
            elif action == "heal" and cut:
                pair = rng.choice(sorted(cut))
                links.heal(pair)
                cut.discard(pair)
                events.append(f"heal {'-'.join(pair)}")
        stop.set()
        await sender
        attacker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attacker

        # Heal everything, then one convergence wait.
        links.heal(*cut)
        await herd.start_async(*sorted(down))
        wrong, agree, converged = await converge(herd, clients)
        points = sum(len(c.acked) for c in clients)
        print(
            f"\nchaos: {len(events)} events ({', '.join(events)}); "
            f"updates: {stats['acked']} acknowledged, {stats['unsure']} unsure, "
            f"{stats['refused']} refused; {stats['hostile']} hostile lines refused; "
            f"converged in {converged:.2f} s ({points} points at each server)"
        )
        assert not wrong, wrong[:10]
        assert agree, "servers hold different records"
        assert stats["acked"] > CLIENTS * 5
        assert stats["hostile"] > 100
        for name in NAMES:
            # No link ever dropped for a line it could not take.
            assert "a line over" not in herd.log(name), name
        assert any(e.startswith("kill") for e in events) and any(
            e.startswith("cut") for e in events
        )
    finally:
        await links.close()
        with contextlib.suppress(Exception):
            await herd.stop_async()
