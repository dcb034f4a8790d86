"""A thread that takes work queued by the event loop and does it in batches.

The loop only appends to a deque (atomic: no lock on its side) and sets an event when the
thread has something to wake for; the thread lets work gather briefly, takes a batch and
hands it to ``write``. A batch that fails with one of ``retried`` (a full disk) is rolled
back and tried again later, never dropped; any other failure is a bug: the batch is rolled
back, logged and ``dropped`` so that the thread goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Generic, TypeVar

__all__ = ["BATCH", "IDLE_S", "RETRY_S", "BatchThread"]

log = logging.getLogger("herd.history")

# Items (chunks, deletions) per transaction, at most: a commit of 2,000 chunks of a few
# hundred points writes some 10 MB, a fraction of a second's work.
BATCH = 2_000
# How long the thread lets work gather once some is queued, before it writes (sooner when a
# reader waits, or a batch is full): the points are already gathered into chunks on the
# loop, so this only bounds how many commits a burst of chunks costs. With nothing queued
# the thread sleeps until something is: a thread that woke to poll would take the GIL from
# the loop 50 times a second for nothing.
IDLE_S = 0.02
# After a failed write (disk full), wait this long before trying the same batch again.
RETRY_S = 1.0

Item = TypeVar("Item")


class BatchThread(Generic[Item]):
    """Subclasses say how a batch is written (``write``), undone (``roll_back``) and given
    up (``dropped``), and which failures are worth retrying (``retried``)."""

    retried: tuple[type[Exception], ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: collections.deque[Item] = collections.deque()
        self.wake = threading.Event()
        self.urgent = False  # write what is queued without waiting for more (a reader waits)
        self.stopping = False
        self._thread: threading.Thread | None = None

    def write(self, batch: list[Item]) -> None:
        raise NotImplementedError

    def roll_back(self) -> None:
        """Undo what a failed ``write`` began."""

    def dropped(self, batch: list[Item]) -> None:
        """A batch given up after a failure that retrying would not cure."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        self.queue.append(item)  # deque.append is atomic: no lock on the loop's side
        if len(self.queue) in (1, BATCH):
            self.wake.set()  # the first wakes the thread; a full batch is written at once

    def hurry(self) -> None:
        """Write what is queued now (a reader is waiting for it)."""
        self.urgent = True
        self.wake.set()

    def stop(self) -> None:
        """Write what is queued, then end the thread (blocking: call from a worker)."""
        self.stopping = True
        self.wake.set()
        if self._thread is not None:
            self._thread.join()

    def _wait(self) -> None:
        """Until something is queued, then up to IDLE_S for more to gather (not when a batch
        is full, a reader waits or the thread stops). Each wait clears the event and looks
        again before it sleeps, so a ``put`` or ``hurry`` in between is never missed."""
        if not self.queue and not self.stopping:
            self.wake.clear()
            if not self.queue and not self.stopping:
                self.wake.wait()
        if len(self.queue) < BATCH and not (self.urgent or self.stopping):
            self.wake.clear()
            if len(self.queue) < BATCH and not (self.urgent or self.stopping):
                self.wake.wait(IDLE_S)
        self.urgent = False

    def _run(self) -> None:
        while True:
            self._wait()
            batch = self._take()
            if not batch:
                if self.stopping:
                    return
                continue
            while True:
                try:
                    self.write(batch)
                except self.retried as exc:
                    self.roll_back()
                    log.error("%s: write failed, retrying in %.0f s: %s", self.name, RETRY_S, exc)
                    time.sleep(RETRY_S)
                    continue
                except Exception:
                    # A bug, not a full disk: retrying would stall the thread for good.
                    self.roll_back()
                    log.exception("%s: a batch of %d could not be written", self.name, len(batch))
                    self.dropped(batch)
                break

    def _take(self) -> list[Item]:
        batch: list[Item] = []
        queue = self.queue
        while queue and len(batch) < BATCH:
            batch.append(queue.popleft())
        return batch
