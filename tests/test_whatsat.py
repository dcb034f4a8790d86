"""WHATSAT end to end: server processes asking a fake Google on loopback, and the offline
gazetteer with the default data."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from fake_google import FakeGoogle, fake_google
from helpers import Herd, iamat

KIWI = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1614209128.918963997\n"


def split_reply(reply: bytes) -> tuple[bytes, dict[str, object]]:
    at, _, rest = reply.partition(b"\n")
    assert rest.endswith(b"\n\n") and b"\n\n" not in rest[:-2], rest[-50:]
    return at + b"\n", json.loads(rest)


def google_herd(root: Path, google: FakeGoogle, key: str) -> Herd:
    return Herd(
        root,
        names=("Riley", "Jaquez"),
        links=[("Riley", "Jaquez")],
        places="timeout = 1.0",
        env={"GOOGLE_PLACES_API_KEY": key, "GOOGLE_PLACES_URL": google.url},
    )


async def test_whatsat_asks_google_in_metres_and_cuts_to_the_bound(tmp_path: Path) -> None:
    async with fake_google() as google, google_herd(tmp_path, google, "test-key-123") as herd:
        await herd.wait_links_async()
        at = await herd.ask_async("Riley", KIWI)
        reply = await herd.ask_async("Jaquez", b"WHATSAT kiwi.cs.ucla.edu 10.5 3\n")
    line, places = split_reply(reply)
    assert line == at
    assert places["status"] == "OK"
    assert isinstance(places["results"], list) and len(places["results"]) == 3
    [query] = google.requests
    assert query["location"] == "34.06893,-118.445127"
    assert query["radius"] == "10500"
    assert query["key"] == "test-key-123"
    assert "test-key-123" not in herd.log("Jaquez")


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("over-limit", "OVER_QUERY_LIMIT"),
        ("bad-key", "REQUEST_DENIED"),
        ("http-500", "UNKNOWN_ERROR"),
        ("slow", "UNKNOWN_ERROR"),
        ("not-json", "UNKNOWN_ERROR"),
    ],
)
async def test_google_failures_still_answer_with_the_at_line(
    tmp_path: Path, key: str, status: str
) -> None:
    async with fake_google() as google, google_herd(tmp_path, google, key) as herd:
        at = await herd.ask_async("Riley", KIWI)
        started = time.monotonic()
        reply = await herd.ask_async("Riley", b"WHATSAT kiwi.cs.ucla.edu 10 5\n")
        took = time.monotonic() - started
        # The server is still serving after the failure.
        again = await herd.ask_async("Riley", iamat("next"))
    line, places = split_reply(reply)
    assert line == at
    assert places["status"] == status and places["results"] == []
    assert isinstance(places["error_message"], str) and key not in places["error_message"]
    assert took < 5, "a failed lookup is answered within the configured bound (1 s here)"
    assert again.startswith(b"AT Riley ")


def test_embedded_default_gazetteer_answers_kiwi_with_real_places(tmp_path: Path) -> None:
    # The default data (no gazetteer set), preloaded in the background as `herd up` does.
    with Herd(
        tmp_path,
        names=("Riley", "Jaquez"),
        links=[("Riley", "Jaquez")],
        places='provider = "embedded"',
    ) as herd:
        herd.wait_links()
        at = herd.ask("Riley", KIWI)
        line, places = split_reply(herd.ask("Jaquez", b"WHATSAT kiwi.cs.ucla.edu 10 20\n"))
        assert line == at
        names = [place["name"] for place in places["results"]]  # type: ignore[index, union-attr]
        for expected in ("Bel Air", "Beverly Hills", "Santa Monica Municipal Airport"):
            assert expected in names
        assert "GeoNames" in json.dumps(places["html_attributions"])
        herd.ask("Riley", b"IAMAT castaway +0.0-140.0 1700000000\n")
        _, ocean = split_reply(herd.ask("Riley", b"WHATSAT castaway 50 20\n"))
        assert ocean["status"] == "ZERO_RESULTS" and ocean["results"] == []


async def test_sigterm_lets_a_reply_in_flight_finish(tmp_path: Path) -> None:
    import signal

    from helpers import listening_async, poll_async

    # Google never answers; its timeout is 1 s.
    async with fake_google() as google, google_herd(tmp_path, google, "slow") as herd:
        at = await herd.ask_async("Riley", KIWI)
        port = herd.ports["Riley"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"WHATSAT kiwi.cs.ucla.edu 10 5\n")
        await poll_async(lambda: len(google.requests) == 1, 5, "the lookup")
        riley = herd.procs["Riley"]
        riley.send_signal(signal.SIGTERM)

        async def closed() -> bool:
            return not await listening_async(port)

        await poll_async(closed, 5, "no accept")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await poll_async(lambda: riley.poll() is not None, 10, "Riley to exit")
        code = riley.returncode
    line, places = split_reply(reply)
    assert line == at and places["status"] == "UNKNOWN_ERROR"
    assert code == 0
    assert "finishing 1 replies in flight" in herd.log("Riley")
