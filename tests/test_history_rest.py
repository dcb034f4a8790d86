"""GET /api/v1/clients/{id}/history through the gateway: a client's points oldest first, late
points included, attributes kept, paged by cursor, and bad parameters refused with 400."""

from __future__ import annotations

import time
from typing import Any

from helpers import Herd

NOW = time.time()
HERD_EXTRA = "[history]\nenabled = true\n"  # (off by default)


async def post(client: Any, body: dict[str, Any]) -> None:
    response = await client.post("/api/v1/locations", json=body)
    assert response.status == 200, await response.text()


async def test_a_clients_history_pages_oldest_first_with_late_points(
    herd: Herd, client: Any
) -> None:
    # Newest first, then older ones (a phone's queue arriving late): all are kept.
    times = [NOW - i for i in range(7)]
    for t in times:
        await post(
            client,
            {
                "client_id": "kiwi",
                "lat": 34.0,
                "lon": -118.0,
                "time": t,
                "attributes": {"battery": 50},
            },
        )
    pages, cursor = [], None
    while True:
        query = {"since": f"{NOW - 3600:.3f}", "limit": "3"}
        if cursor:
            query["cursor"] = cursor
        response = await client.get("/api/v1/clients/kiwi/history", params=query)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["client_id"] == "kiwi"
        pages.append(body["points"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    points = [p for page in pages for p in page]
    assert [len(page) for page in pages][:2] == [3, 3]
    assert len(points) == 7
    assert [p["time"] for p in points] == sorted(p["time"] for p in points)
    assert all(p["attributes"] == {"battery": 50} for p in points)
    # The newest record is still the newest: history never replaces it.
    current = await (await client.get("/api/v1/clients/kiwi")).json()
    assert current["record"]["time"] == max(p["time"] for p in points)


async def test_bad_history_parameters_are_400(client: Any) -> None:
    for query in (
        {"since": "yesterday"},
        {"since": "1e9"},
        {"limit": "0"},
        {"limit": "10001"},
        {"cursor": "nonsense"},
    ):
        response = await client.get("/api/v1/clients/kiwi/history", params=query)
        assert response.status == 400, (query, await response.text())
        assert "error" in await response.json()
    empty = await client.get("/api/v1/clients/kiwi/history", params={"since": "10", "until": "5"})
    assert empty.status == 200 and (await empty.json())["points"] == []
    unknown = await client.get("/api/v1/clients/nobody-here/history")
    assert unknown.status == 200
    assert (await unknown.json())["points"] == []
