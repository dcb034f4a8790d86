"""Logging for a server process: every line to the server's own file, lifecycle to stderr.

Records go through a queue to a listener thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import sys
from pathlib import Path

from .config import LogRotation
from .files import PRIVATE_FILE, private_dir

__all__ = ["SafeFormatter", "rotate", "setup_logging"]

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


# Control characters a terminal could act on, escaped in every record: a message may quote what
# a client sent (a server name in PEER, a line that failed to parse). LF stays (tracebacks).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x0A} | {
    c: f"\\u{c:04x}" for c in range(0x80, 0xA0)
}


class SafeFormatter(logging.Formatter):
    """A formatter whose output holds no control characters but line breaks."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_CONTROLS)


def rotate(path: Path, backups: int) -> None:
    """Rotate ``path`` as ``logging.handlers.RotatingFileHandler`` does: ``path.N`` is dropped,
    ``path.K`` becomes ``path.K+1``, ``path`` becomes ``path.1``."""
    for k in range(backups - 1, 0, -1):
        older = Path(f"{path}.{k}")
        if older.exists():
            os.replace(older, f"{path}.{k + 1}")
    if path.exists():
        os.replace(path, f"{path}.1")


def setup_logging(
    log_file: Path | None,
    console_level: int = logging.INFO,
    rotation: LogRotation | None = None,
) -> logging.handlers.QueueListener:
    """Send all records to ``log_file`` (traffic included) and those at ``console_level`` and
    above to stderr. Creates the log directory. Returns the started listener; stop it at exit
    to flush.

    With ``rotation`` (and a size) the file is rotated here; otherwise something else rotates
    it (a server's traffic log, which writes most of the file, or logrotate) and the file is
    reopened whenever its name points to a new file.
    """
    formatter = SafeFormatter(FORMAT, DATEFMT)
    handlers: list[logging.Handler] = []
    if log_file is not None:
        private_dir(log_file.parent)
        file_handler: logging.FileHandler
        if rotation is None or not rotation.max_bytes:
            file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        else:
            file_handler = logging.handlers.RotatingFileHandler(
                log_file,
                maxBytes=rotation.max_bytes,
                backupCount=rotation.backups,
                encoding="utf-8",
            )
        # Private, even if an older version made it readable (new files after a rotation are
        # private by the process's umask, see cli.py).
        with contextlib.suppress(OSError):  # someone else's file: it keeps its mode
            os.chmod(log_file, PRIVATE_FILE)
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        handlers.append(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(formatter)
    handlers.append(console)

    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(logging.DEBUG if log_file is not None else console_level)
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    return listener
