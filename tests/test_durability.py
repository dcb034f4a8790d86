"""Nothing acknowledged is lost: the journal, recovery, and anti-entropy between servers."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest
from helpers import NAMES, Herd, iamat, poll

pytestmark = pytest.mark.timeout(120)


def test_kill_9_with_all_neighbours_down_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with Herd(tmp_path) as herd:
        herd.wait_links()
        herd.kill("Jaquez")
        herd.kill("Juzang")
        acked = {
            f"lonely-{i}": herd.ask("Riley", iamat(f"lonely-{i}", when=1700000000 + i))
            for i in range(200)
        }
        herd.kill("Riley", signal.SIGKILL)
        herd.start("Riley")
        for client, reply in acked.items():
            assert herd.whereis("Riley", client) == reply
        reply = herd.ask("Riley", b"WHATSAT lonely-7 10 1\n")
        assert reply.startswith(acked["lonely-7"])


def test_records_learnt_while_apart_reach_everyone_when_links_return(tmp_path: Path) -> None:
    with Herd(tmp_path) as herd:
        herd.wait_links()
        # Riley's neighbours go down; Riley acknowledges records and is then killed -9, so no
        # link queue anywhere still holds them: only Riley's journal does.
        herd.kill("Jaquez")
        herd.kill("Juzang")
        riley = {f"riley-{i}": herd.ask("Riley", iamat(f"riley-{i}")) for i in range(50)}
        herd.kill("Riley")
        # Meanwhile the other side learns records Riley has never seen.
        bernard = {f"bernard-{i}": herd.ask("Bernard", iamat(f"bernard-{i}")) for i in range(50)}
        herd.start("Riley", "Jaquez", "Juzang")
        herd.wait_links()
        for name in NAMES:
            for client, reply in {**riley, **bernard}.items():
                herd.wait_record(name, client, reply)
        counts = {name: herd.status(name)["records"] for name in NAMES}
        assert set(counts.values()) == {100}, counts
        assert "ranges differ" in herd.log("Riley")  # it was the digests that found them


def test_servers_that_agree_exchange_only_digests(tmp_path: Path) -> None:
    with Herd(tmp_path) as herd:
        herd.wait_links()
        for i in range(100):
            herd.ask(NAMES[i % 5], iamat(f"agreed-{i}"))
        for name in NAMES:
            poll(
                lambda name=name: herd.status(name)["records"] == 100, what=f"100 records at {name}"
            )
        # Campbell restarts holding exactly what its neighbours hold: its links come up, the
        # digests agree, and no record crosses.
        herd.kill("Campbell", signal.SIGTERM)
        herd.start("Campbell")
        herd.wait_links()
        # The digests crossed (both sides log each new link) and nobody found a difference.
        for name in ["Campbell", *herd.neighbours("Campbell")]:
            poll(lambda name=name: herd.log(name).count("link to") >= 2, what=f"{name}'s log")
            assert "ranges differ" not in herd.log(name)


def test_fsync_mode_acknowledges_and_recovers(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=(), extra="[durability]\nfsync = true\n") as herd:
        acked = {f"synced-{i}": herd.ask("Solo", iamat(f"synced-{i}")) for i in range(50)}
        herd.kill("Solo", signal.SIGKILL)
        herd.start("Solo")
        for client, reply in acked.items():
            assert herd.whereis("Solo", client) == reply


def test_the_journal_is_compacted_and_recovery_still_finds_everything(tmp_path: Path) -> None:
    extra = "[durability]\ncompact_min = 50\n"
    with Herd(tmp_path, names=("Solo",), links=(), extra=extra) as herd:
        # 40 clients, 10 reports each: 400 appends, far past twice the 40 live records.
        newest = {}
        for round_ in range(10):
            for i in range(40):
                newest[f"c{i}"] = herd.ask("Solo", iamat(f"c{i}", when=1700000000 + round_))
        data = tmp_path / "data" / "Solo"

        def lines_on_disk() -> int:
            total = 0
            for path in [data / "snapshot", *data.glob("journal.*")]:
                with contextlib.suppress(FileNotFoundError):  # deleted as we look
                    total += len(path.read_bytes().splitlines())
            return total

        # The snapshot is renamed into place before the older segments are deleted: wait for
        # the whole compaction, not just its first step.
        poll(lambda: (data / "snapshot").exists() and lines_on_disk() < 200, what="compaction")
        herd.kill("Solo", signal.SIGKILL)
        herd.start("Solo")
        for client, reply in newest.items():
            assert herd.whereis("Solo", client) == reply


def test_retention_drops_old_records_and_refuses_them_from_anyone(tmp_path: Path) -> None:
    import time

    extra = "[durability]\nretention = 3\n"
    with Herd(
        tmp_path, names=("Riley", "Jaquez"), links=[("Riley", "Jaquez")], extra=extra
    ) as herd:
        herd.wait_links()
        # Already too old: answered, not stored, not flooded.
        stale = herd.ask("Riley", iamat("stale", when=time.time() - 60))
        assert stale.startswith(b"AT Riley ")
        assert herd.whereis("Riley", "stale") == b"? WHEREIS stale\n"
        # Fresh now, stale in three seconds: it goes from both servers.
        fresh = herd.ask("Riley", iamat("fleeting"))
        herd.wait_record("Jaquez", "fleeting", fresh)
        for name in ("Riley", "Jaquez"):
            poll(
                lambda name=name: herd.whereis(name, "fleeting") == b"? WHEREIS fleeting\n",
                15,
                f"fleeting to expire at {name}",
            )
