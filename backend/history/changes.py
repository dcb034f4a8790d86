"""What one write transaction changes beside the chunks: digests (hour and day buckets),
point counts and floors, written together at its end."""

from __future__ import annotations

import sqlite3

from .points import day_bucket

__all__ = ["Changes"]


class Changes:
    """What one transaction changes beside the chunks: digests, counts, floors."""

    def __init__(self) -> None:
        self.digests: dict[int, tuple[int, int]] = {}  # hour bucket -> (count delta, xor)
        self.deltas: dict[int, int] = {}  # client -> change of its point count
        self.names: dict[int, str] = {}  # every client touched
        self.floors: dict[int, int] = {}  # floors set in this transaction

    def count(self, bucket: int, cid: int, delta: int, hashes: list[int]) -> None:
        """``delta`` points of the client in ``bucket``, whose identity hashes are given."""
        count, xor = self.digests.get(bucket, (0, 0))
        for h in hashes:
            xor ^= h
        self.digests[bucket] = (count + delta, xor)
        self.deltas[cid] = self.deltas.get(cid, 0) + delta

    def write(self, conn: sqlite3.Connection) -> None:
        days: dict[int, tuple[int, int]] = {}
        for b, (count, xor) in self.digests.items():
            day = day_bucket(b)
            held, held_xor = days.get(day, (0, 0))
            days[day] = (held + count, held_xor ^ xor)
        for table, digests in (("hours", self.digests), ("digests", days)):
            conn.executemany(
                f"INSERT INTO {table} VALUES (?, ?, ?) ON CONFLICT (bucket) DO UPDATE "
                "SET count = count + excluded.count, "
                # SQLite has no XOR operator: a ^ b is (a | b) & ~(a & b), with no overflow.
                "xor = (xor | excluded.xor) & ~(xor & excluded.xor)",
                [(b, count, _signed(xor)) for b, (count, xor) in digests.items()],
            )
            conn.execute(f"DELETE FROM {table} WHERE count = 0")
        conn.executemany(
            "UPDATE clients SET points = points + ? WHERE id = ?",
            [(delta, cid) for cid, delta in self.deltas.items() if delta],
        )
        conn.executemany(
            "UPDATE clients SET floor = ? WHERE id = ?",
            [(ns, cid) for cid, ns in self.floors.items()],
        )


def _signed(value: int) -> int:
    """XOR of signed 64-bit hashes stays in range; normalise Python's sign anyway."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value
