"""Files a server or gateway makes are private to the user it runs as.

The journal and snapshot hold every client's location, and the logs every line in and out
(handshake lines and client IDs included): no other local user may read them. New files are
0600 and new directories 0700; a file we open for writing is tightened to 0600 even if an older
version of the herd made it readable. Directories that exist already are left as they are
(an operator may share a parent on purpose) except the ones that only a server writes to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "build_once", "open_private", "private_dir"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path, tighten: bool = False) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask. With
    ``tighten``, ``path`` itself is made 0700 if it existed (a directory only we write to)."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode goes through the umask
    if tighten and not missing:
        with contextlib.suppress(OSError):  # not ours to change: it stays as it is
            os.chmod(path, PRIVATE_DIR)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with O_CREAT and mode 0600, and the file made 0600 if it existed."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    with contextlib.suppress(OSError):  # someone else's file: keep its mode, still write
        os.fchmod(fd, PRIVATE_FILE)
    return fd


def build_once(path: Path, command: list[str]) -> str | None:
    """Run ``command`` (a process that writes ``path``) unless ``path`` exists: one builder per
    machine, the others wait on a lock file beside it (no GIL held while waiting). None once
    ``path`` is there; the end of the builder's stderr if it failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return None
        built = subprocess.run(command, capture_output=True, text=True)
        return None if built.returncode == 0 else built.stderr[-500:] or "no output"
