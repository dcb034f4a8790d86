"""History's database: one SQLite file per server, in WAL mode, opened with no setup.

Tables::

    clients   id <-> client ID, the client's point count, and its floor: no point at or before
              it is kept (its history was deleted up to there, or it is at its point limit)
    points    one row per point, keyed (client, ns, location): a client's points lie together
              in time order, so a window is one range scan; WITHOUT ROWID keeps a row near
              70 bytes
    cells     (hour, client) -> the box its points of that hour lie in: "who was in this area
              in this window" reads these, then only the points of the clients found
    digests   (bucket) -> count and XOR of identity hashes (points.py), kept in the same
              transaction as the points they describe
    forgotten client ID -> the time up to which its history was deleted (replicated)
    meta      the schema's version
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "connect", "create"]

SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS points (
    client INTEGER NOT NULL,
    ns INTEGER NOT NULL,
    location TEXT NOT NULL,
    time TEXT NOT NULL,
    server TEXT NOT NULL,
    diff TEXT NOT NULL,
    attributes BLOB,
    PRIMARY KEY (client, ns, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cells (
    hour INTEGER NOT NULL,
    client INTEGER NOT NULL,
    south REAL NOT NULL, west REAL NOT NULL, north REAL NOT NULL, east REAL NOT NULL,
    PRIMARY KEY (hour, client)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digests (
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


def create(conn: sqlite3.Connection) -> bool:
    """Create the tables if missing; True if the database was new (nothing in it yet)."""
    new: bool = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.executescript(_TABLES)
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if found is None:
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    elif found[0] != SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"history schema {found[0]} is not {SCHEMA_VERSION}: made by another version"
        )
    return new
