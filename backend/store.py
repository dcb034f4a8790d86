"""The records a server holds: the newest AT record of every client it has heard of."""

from __future__ import annotations

from collections.abc import Iterator

from .protocol import Record

__all__ = ["Store"]


class Store:
    """Client ID → newest record, under the herd's total order (``Record.newer_than``)."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}

    def get(self, client_id: str) -> Record | None:
        return self._records.get(client_id)

    def offer(self, record: Record) -> bool:
        """Keep ``record`` if it is newer than the one held; say whether it was kept."""
        if record.newer_than(self._records.get(record.client_id)):
            self._records[record.client_id] = record
            return True
        return False

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())
