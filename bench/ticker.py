"""A periodic timer the event loop waits on without spinning: a Linux ``timerfd``.

The event loops' own timers have millisecond resolution (uvloop rounds a delay to whole
milliseconds, so ``asyncio.sleep(0.0005)`` returns at once and a loop of them spins a CPU;
asyncio's epoll timeout is rounded up to a millisecond). An open-loop sender at 1,000 lines/s
needs a tick every millisecond, on time, while its CPU stays free for the processes under test:
a timerfd gives nanosecond intervals and is an ordinary readable descriptor for
``loop.add_reader``. Python 3.13 has ``os.timerfd_create``; on 3.11 it is called through
ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["Ticker"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_PR_SET_TIMERSLACK = 29
# The kernel may defer a timer of an ordinary process by its "timer slack", 50 us unless
# set: as long as the gap between two lines at 20,000/s, so the sender asks for 1 us.
_TIMER_SLACK_NS = 1_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's prctl and timerfd calls, typed (on first use: Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.timerfd_settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_Itimerspec),
        ctypes.c_void_p,
    ]
    return libc


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _timespec(seconds: float) -> _Timespec:
    ns = max(1, round(seconds * 1e9))
    return _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)


class Ticker:
    """Readable every ``interval`` seconds from now; ``expirations()`` says how many ticks
    passed since the last call (more than one if the loop was late)."""

    def __init__(self, interval: float) -> None:
        libc = _libc()
        _check(libc.prctl(_PR_SET_TIMERSLACK, _TIMER_SLACK_NS, 0, 0, 0))
        self.fd = _check(libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        spec = _Itimerspec(_timespec(interval), _timespec(interval))
        try:
            _check(libc.timerfd_settime(self.fd, 0, spec, None))
        except OSError:
            os.close(self.fd)
            raise

    def expirations(self) -> int:
        try:
            return int.from_bytes(os.read(self.fd, 8), "little")
        except BlockingIOError:  # woken for nothing
            return 0

    def close(self) -> None:
        os.close(self.fd)
