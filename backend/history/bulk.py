"""A large history written straight into a database, with no server (benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..files import private_dir
from .batches import BATCH
from .points import Point, Row
from .schema import connect, create
from .store import CHUNK_POINTS, FILE
from .writer import Chunk, Expire, Forget, Writer

__all__ = ["fill"]


def fill(directory: Path, rows: Iterable[Row], *, max_points: int = 1_000_000) -> int:
    """Write ``rows`` (sorted by client) straight into ``directory``/history.db (made if need
    be), with no server: for benchmarks and tests that need a large history. Returns the
    points in the database."""
    private_dir(directory, tighten=False)
    conn = connect(directory / FILE, durable=False)
    create(conn)
    writer = Writer(conn, max_points, lambda *_: None)
    batch: list[Chunk | Forget | Expire] = []
    gathered: list[Point] = []
    for row in rows:
        if gathered and (row.client_id != gathered[0].client_id or len(gathered) == CHUNK_POINTS):
            batch.append(Chunk(gathered[0].client_id, gathered))
            gathered = []
            if len(batch) == BATCH:
                writer.apply(batch)
                batch = []
        gathered.append(row)
    if gathered:
        batch.append(Chunk(gathered[0].client_id, gathered))
    if batch:
        writer.apply(batch)
    conn.close()
    return writer.stored
