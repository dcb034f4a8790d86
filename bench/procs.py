"""Processes under test: start them in their own process group, pin them to CPUs, read their
CPU time and memory from ``/proc``, and kill every one of them on the way out.

Everything here is Linux-specific (``/proc``, ``sched_setaffinity``); the harness says so and
stops early elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "Proc",
    "Procs",
    "cpu_seconds",
    "cpus_available",
    "get_nice",
    "pin",
    "rss_bytes",
    "set_nice",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpus_available() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus``.

    ``sched_setaffinity(pid)`` only moves the thread whose id is ``pid``; threads started
    before the call (a logging thread, a places loader, libuv's pool) would stay where they
    were, so each thread in ``/proc/<pid>/task`` is moved. Threads started later inherit it.
    """
    mask = set(cpus)
    for tid in _tids(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, mask)


def set_nice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of ``pid`` (on Linux, nice is per thread).

    Raises PermissionError when lowering it needs a privilege this process lacks.
    """
    for tid in _tids(pid):
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def get_nice(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def _tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by every thread of ``pid``.

    Read from the process's CPU-time clock (``clock_gettime`` on the clock ID Linux derives
    from a pid), to the nanosecond; where that is refused, from ``/proc/<pid>/stat`` (utime
    and stime, in 10 ms clock ticks).
    """
    try:
        return time.clock_gettime(_process_cpu_clock(pid))
    except OSError:
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(b")") + 2 :].split()
    # Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _process_cpu_clock(pid: int) -> int:
    # What clock_getcpuclockid(3) returns on Linux: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
    return ((~pid) << 3) | 2


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """One child process, leader of its own process group, with its output in a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        pipe: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``pipe``: read stdout (a baseline prints its port there); else it goes to ``log``.
        ``env``: the environment (default: this process's)."""
        self.name = name
        self.argv = list(argv)
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else out,
                stderr=out,
                cwd=cwd,
                env=env,
                # Its own group, so killing the group also kills anything it started (node's
                # helpers, a server's children) and Ctrl-C at the terminal reaches only us.
                process_group=0,
            )
        self.started = time.monotonic()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def read_port(self, timeout: float = 20.0) -> int:
        """The port a baseline prints on its first line of stdout once it listens."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        os.set_blocking(fd, False)
        data = b""
        while b"\n" not in data:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} printed no port within {timeout} s")
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(fd, 4096)
                if chunk:
                    data += chunk
                    continue
            time.sleep(0.01)
        return int(data.split(b"\n", 1)[0])

    def tail(self, n: int = 2000) -> str:
        """The end of the process's stderr, for error messages."""
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def last_line(self) -> str:
        """The last line the process wrote to stderr (its error, when it died)."""
        lines = self.tail().splitlines()
        return lines[-1] if lines else "(no output)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Send ``sig`` to the process group, then SIGKILL it if it is still there. Once only:
        after that the group's id may be any new process's."""
        if self._stopped:
            return self.popen.returncode
        self._stopped = True
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            # Whatever is left in the group (the leader, or anything it started) goes too.
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


class Procs:
    """Every process the harness started; ``close`` (or leaving the ``with``) kills them all."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path | None = None,
        pipe: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        proc = Proc(name, argv, self.logs / f"{name}.stderr", cwd, pipe, env)
        self._procs.append(proc)
        return proc

    def forget(self, proc: Proc, sig: int = signal.SIGTERM) -> None:
        """Stop ``proc`` now with ``sig`` (it is not needed any more)."""
        proc.stop(sig)
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.stop(signal.SIGKILL, timeout=2.0)
        self._procs.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
