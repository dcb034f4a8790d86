"""Nothing acknowledged is lost: the journal, recovery, and anti-entropy between servers."""

from __future__ import annotations

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
