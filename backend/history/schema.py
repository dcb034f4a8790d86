"""History's database: one SQLite file per server, in WAL mode, opened with no setup.

Tables::

    clients   id <-> client ID, its slice (points.SPREAD), its point count, and its floor: no
              point at or before it is kept (its history was deleted up to there, or it is at
              its point limit)
    chunks    a client's points of one hour (UTC) or part of one, packed and compressed
              (points.encode_chunk), with their count, first and last times and bounding box:
              a window is a range scan over a client's chunks, and a commit writes a row per
              chunk, not per point. Chunks of one client may overlap in time (a late point
              comes in a chunk of its own); none holds a point another holds.
    digests   (bucket) -> count and XOR of identity hashes (points.py), kept in the same
              transaction as the points they describe
    hours     (hour bucket) -> the same for an hour and a slice: anti-entropy's leaves
    forgotten client ID -> the time up to which its history was deleted (replicated)
    meta      the schema's version

Version 1 (a row per point, and hourly cells) is converted to chunks when opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "connect", "converted", "create"]

SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slice INTEGER NOT NULL,
    points INTEGER NOT NULL DEFAULT 0,
    floor INTEGER
);
CREATE INDEX IF NOT EXISTS clients_by_slice ON clients (slice);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client INTEGER NOT NULL,
    day INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    count INTEGER NOT NULL,
    south REAL NOT NULL, west REAL NOT NULL, north REAL NOT NULL, east REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_client ON chunks (client, last);
CREATE INDEX IF NOT EXISTS chunks_by_day ON chunks (day, client);
CREATE TABLE IF NOT EXISTS digests (
    bucket INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    xor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hours (
    bucket INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    xor INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forgotten (
    name TEXT PRIMARY KEY,
    until INTEGER NOT NULL
) WITHOUT ROWID;
"""


def connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journaling.

    ``synchronous``: NORMAL writes each commit to the WAL with ``write(2)`` (safe from
    ``kill -9``, as the record journal is) and syncs at checkpoints; FULL, when the record
    journal fsyncs too, syncs every commit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    # Reads and writes on other threads' connections wait for each other instead of failing.
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def create(conn: sqlite3.Connection) -> tuple[bool, int]:
    """Create the tables if missing; whether the database was new (nothing in it yet), and
    the schema version it was made with (SCHEMA_VERSION, or 1 to convert: ``store``)."""
    new: bool = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.executescript(_TABLES)
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if found is None:
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return new, SCHEMA_VERSION
    if found[0] not in (1, SCHEMA_VERSION):
        raise sqlite3.DatabaseError(
            f"history schema {found[0]} is not {SCHEMA_VERSION}: made by another version"
        )
    return new, int(found[0])


def converted(conn: sqlite3.Connection) -> None:
    """Version 1's tables are gone (their points now in chunks): mark the schema current."""
    conn.execute("DROP TABLE IF EXISTS points")
    conn.execute("DROP TABLE IF EXISTS cells")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
