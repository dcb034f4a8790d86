"""Journal recovery without a socket: a server loads the snapshot and every segment, keeps the
newest record per client whatever the order, and drops (and counts) a torn last line, a
record past the protocol's bounds and anything that is not a record (backend/journal.py)."""

from __future__ import annotations

from pathlib import Path

from in_memory import herd_config, make_server

from backend.journal import Journal
from backend.protocol import MAX_CLIENT_ID_BYTES


def at(client: str, when: str = "1614209128.5", origin: str = "Solo") -> bytes:
    return f"AT {origin} +0.100000000 {client} +34.068930-118.445127 {when}\n".encode()


POISON = b"AT Solo +0.100000000 " + b"p" * (MAX_CLIENT_ID_BYTES + 1) + b" +1+1 1614209128.5\n"
TORN = at("torn")[:40]  # power lost in the middle of the write: no newline, half a location


async def test_recovery_keeps_the_newest_of_every_file_and_drops_what_is_not_a_record(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data" / "Solo"
    data.mkdir(parents=True)
    (data / "snapshot").write_bytes(at("kiwi") + at("owl", "1614209200"))
    (data / "journal.1").write_bytes(at("kiwi", "1614209300") + POISON + at("owl", "1614209100"))
    (data / "journal.2").write_bytes(b"IAMAT x +1+1 1\n\n" + at("emu") + TORN)
    server = make_server(herd_config(tmp_path))  # recovers
    try:
        assert len(server.store) == 3
        assert server.dropped == 3  # the poison record, the IAMAT and the torn line
        for client, when in (
            ("kiwi", "1614209300"),
            ("owl", "1614209200"),
            ("emu", "1614209128.5"),
        ):
            record = server.store.get(client)
            assert record is not None and record.line + b"\n" == at(client, when)
    finally:
        await server.close()


async def test_appended_records_are_in_the_kernel_after_one_flush_and_recovered(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j")
    assert list(journal.recover()) == []
    journal.open()
    assert journal.append(at("a")) is True  # the first of a batch: the caller flushes
    assert journal.append(at("b")) is False
    segment = tmp_path / "j" / "journal.1"
    assert segment.read_bytes() == b""
    journal.flush()
    assert segment.read_bytes() == at("a") + at("b")
    await journal.close()
    reopened = Journal(tmp_path / "j")
    assert list(reopened.recover()) == [at("a"), at("b")]
    reopened.open()
    assert (tmp_path / "j" / "journal.2").exists()  # appends go to a new segment
    await reopened.close()
