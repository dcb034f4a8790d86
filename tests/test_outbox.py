"""The traffic log: one log line per protocol line, whatever the batch holds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from backend.config import LogRotation
from backend.outbox import TrafficLog

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} TRAFFIC "


def logged(tmp_path: Path, entries: list[tuple[str, str, bytes]]) -> list[bytes]:
    log = TrafficLog(tmp_path / "server.log")
    for who, arrow, data in entries:
        log.add(TrafficLog.tag(who, arrow), data)
    log.close()
    lines = (tmp_path / "server.log").read_bytes().split(b"\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert re.match(STAMP, line), line
    return [re.sub(STAMP, b"", line, count=1) for line in lines[:-1]]


def test_a_batch_of_plain_lines_is_logged_one_line_each(tmp_path: Path) -> None:
    entries = [
        ("127.0.0.1:4000", ">>", b"IAMAT kiwi +1+1 1.5\n"),
        ("127.0.0.1:4000", "<<", b"AT Riley +0.1 kiwi +1+1 1.5\n"),
        ("Jaquez", "<<", b"AT Riley +0.1 kiwi +1+1 1.5\n"),
    ]
    assert logged(tmp_path, entries) == [
        b"127.0.0.1:4000 >> IAMAT kiwi +1+1 1.5",
        b"127.0.0.1:4000 << AT Riley +0.1 kiwi +1+1 1.5",
        b"Jaquez << AT Riley +0.1 kiwi +1+1 1.5",
    ]


def test_multi_line_replies_crlf_and_unended_lines_stay_one_log_line_each(tmp_path: Path) -> None:
    entries = [
        ("a:1", ">>", b"WHATSAT kiwi 10 1\r\n"),
        ("a:1", "<<", b'AT Riley +0.1 kiwi +1+1 1.5\n{\n  "results": []\n}\n\n'),
        ("a:1", ">>", b"a half line, never ended"),
        ("a:1", ">>", b"CR\rinside\n"),
        ("a:1", "--", b"closed\n"),
    ]
    assert logged(tmp_path, entries) == [
        b"a:1 >> WHATSAT kiwi 10 1",
        b'a:1 << AT Riley +0.1 kiwi +1+1 1.5\\n{\\n  "results": []\\n}',
        b"a:1 >> a half line, never ended",
        b"a:1 >> CR\\rinside",
        b"a:1 -- closed",
    ]


def test_a_line_that_forges_a_log_line_cannot_split_its_own(tmp_path: Path) -> None:
    # A client's line holds a newline only at its end, but a reply's body could hold text that
    # looks like a log line; it is escaped, never a log line of its own.
    forged = b"x\n2026-01-01T00:00:00.000 TRAFFIC Riley >> IAMAT forged +1+1 1\n"
    assert logged(tmp_path, [("a:1", "<<", forged), ("a:1", ">>", b"y")]) == [
        b"a:1 << x\\n2026-01-01T00:00:00.000 TRAFFIC Riley >> IAMAT forged +1+1 1",
        b"a:1 >> y",
    ]


async def test_big_entries_are_written_in_pieces_not_held_for_the_batch(tmp_path: Path) -> None:
    # Small lines wait up to LOG_DELAY to be written together; 18 KB WHATSAT replies are
    # written once 64 KiB of them wait, so no write of the log holds the loop for long.
    log = TrafficLog(tmp_path / "server.log")
    tag = TrafficLog.tag("a:1", "<<")
    log.add(tag, b"AT Riley +0.1 kiwi +1+1 1.5\n")
    log.flush_soon()
    assert (tmp_path / "server.log").read_bytes() == b""  # waits for more
    reply = b"AT Riley +0.1 kiwi +1+1 1.5\n" + b'{\n   "results" : []\n}'.ljust(18_000) + b"\n\n"
    for _ in range(3):
        log.add(tag, reply)
        log.flush_soon()
    assert (tmp_path / "server.log").read_bytes() == b""  # 54 KB: still waits
    log.add(tag, reply)
    log.flush_soon()
    assert (tmp_path / "server.log").read_bytes().count(b" TRAFFIC a:1 << ") == 5
    log.close()


def test_the_log_is_rotated_past_its_size_keeping_whole_lines_and_the_newest_files(
    tmp_path: Path,
) -> None:
    path = tmp_path / "server.log"
    log = TrafficLog(path, LogRotation(max_bytes=2000, backups=2))
    tag = TrafficLog.tag("127.0.0.1:4000", ">>")
    sent = [b"IAMAT c%03d +1+1 1.5\n" % i for i in range(200)]
    for i in range(0, len(sent), 10):  # ten lines a batch, as a busy loop iteration writes
        for line in sent[i : i + 10]:
            log.add(tag, line)
        log.flush()
    log.close()

    files = [Path(f"{path}.2"), Path(f"{path}.1"), path]
    assert not Path(f"{path}.3").exists(), "more old files kept than backups"
    batch_bytes = 10 * len(path.read_bytes().splitlines(keepends=True)[0])
    for old in files[:2]:
        assert 2000 <= old.stat().st_size < 2000 + batch_bytes, "not rotated at the batch past 2000"
    kept = [
        re.sub(STAMP + rb"127\.0\.0\.1:4000 >> ", b"", line) + b"\n"
        for old in files
        for line in old.read_bytes().splitlines()
    ]
    # The newest lines, in order, each whole; only the oldest files were dropped.
    assert kept == sent[len(sent) - len(kept) :]
    assert 0 < path.stat().st_size < 2000


def test_a_log_without_a_size_is_never_rotated(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log = TrafficLog(path, LogRotation(max_bytes=0, backups=2))
    for i in range(200):
        log.add(b"a ", b"line %d\n" % i)
        log.flush()
    log.close()
    assert not Path(f"{path}.1").exists()
    assert path.read_bytes().count(b"\n") == 200


def test_a_log_renamed_by_logrotate_is_reopened_at_its_name(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log = TrafficLog(path, LogRotation(max_bytes=0, backups=1))
    log.add(b"a ", b"before\n")
    log.flush()
    path.rename(tmp_path / "server.log.1")  # what logrotate does (without copytruncate)
    log.add(b"a ", b"during\n")
    log.flush()  # still into the renamed file, which the log then lets go
    log.add(b"a ", b"after\n")
    log.close()
    assert path.read_bytes().endswith(b"TRAFFIC a after\n")
    assert b"after" not in (tmp_path / "server.log.1").read_bytes()


def test_a_deleted_log_directory_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "server.log"
    log = TrafficLog(path, LogRotation(max_bytes=0, backups=1))
    log.add(b"a ", b"before\n")
    log.flush()
    shutil.rmtree(tmp_path / "logs")
    log.add(b"a ", b"during\n")
    log.flush()  # into the deleted file; the log then makes its directory and file again
    log.add(b"a ", b"after\n")
    log.close()
    assert path.read_bytes().endswith(b"TRAFFIC a after\n")


def test_a_log_that_cannot_be_rotated_goes_on_in_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "server.log"
    (tmp_path / "server.log.1").mkdir()  # in the way of the rename
    (tmp_path / "server.log.1" / "x").write_text("")
    log = TrafficLog(path, LogRotation(max_bytes=10, backups=1))
    for i in range(3):
        log.add(b"a ", b"line %d\n" % i)
        log.flush()
    log.close()
    assert path.read_bytes().count(b"\n") == 3
    assert len([r for r in caplog.records if "cannot rotate" in r.getMessage()]) == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_log_that_cannot_be_written_drops_its_lines_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = TrafficLog(Path("/dev/full"))  # every write fails: no space left on device
    for i in range(3):
        log.add(b"a ", b"line %d\n" % i)
        log.flush()  # does not raise: the server's replies and floods go on
    log.close()
    assert len([r for r in caplog.records if "cannot write the traffic log" in r.getMessage()]) == 1
