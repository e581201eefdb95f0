"""Waiting for an instant of perf_counter_ns to the microsecond, without spinning: a request's due time,
the workers' shared start, the loop-lag sampler's ticks.

The event loops' own timers are not that precise: asyncio's wait for I/O takes whole milliseconds, and
uvloop keeps its clock in milliseconds, so a timer fires up to a millisecond early or late. An open loop
used to sleep until 2 ms before a send and then yield to the loop until the instant came: precise, but
each request cost ~2 ms of CPU in those yields (a --rate of 500 a second kept a core busy doing nothing).
On Linux, a timerfd armed on the monotonic clock (which perf_counter reads) wakes the loop's I/O wait at
an instant to the microsecond; one timerfd serves every wait of a loop, armed for the earliest. It is
armed LEAD_NS early, and the last stretch is yielded away as before: ~0.3 ms of CPU a wait, not 2.
Elsewhere, and where no timerfd can be made, the old sleep-then-yield wait is kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import os
import sys
import time
from time import perf_counter_ns
from typing import Any, Callable

SPIN_NS = 2_000_000  # the fallback's yielding wait: longer than a loop timer's error
# The alarm rings this long before the instant, and the rest is waited out by yielding to the loop: a CPU
# that went idle takes time to wake (measured on a 2-core VM: 35 µs after 1 ms idle, 220 µs after 10 ms),
# one kept busy by the yields does not
LEAD_NS = 300_000

_Arm = Callable[[int, int], None]


class Alarm:
    """Waits of one running event loop (open(), then close() when they are over)."""

    precise = True  # woken at the instant (a timerfd), not by yielding to the loop until it comes

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, arm: _Arm) -> None:
        self._loop = loop
        self._fd = fd
        self._arm = arm
        self._due: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # equal instants in the order asked
        self._armed: int | None = None
        loop.add_reader(fd, self._ring)

    @staticmethod
    def open() -> "Alarm":
        """The running loop's alarm: a timerfd where the platform has one, else the yielding wait."""
        made = _timerfd()
        loop = asyncio.get_running_loop()
        if made is None:
            return _Yielding(loop)
        fd, arm = made
        try:
            arm(fd, 1)  # rings at once (an instant past): it can be armed
            return Alarm(loop, fd, arm)
        except (OSError, NotImplementedError, ValueError):  # or a loop that cannot watch this descriptor
            os.close(fd)
            return _Yielding(loop)

    async def until(self, when: int, lead_ns: int = LEAD_NS) -> None:
        """Return at `when` (perf_counter_ns) or at once if it has come, without yielding then; the alarm
        rings `lead_ns` before it (0: no yielding, and as late as the CPU is to wake)."""
        wake = when - lead_ns
        if perf_counter_ns() < wake:
            fut = self._loop.create_future()
            heapq.heappush(self._due, (wake, next(self._order), fut))
            if self._armed is None or wake < self._armed:
                self._set(wake)
            await fut
        while perf_counter_ns() < when:
            await asyncio.sleep(0)

    def _set(self, when: int) -> None:
        self._armed = when
        self._arm(self._fd, max(when, 1))  # 0 would disarm it

    def _ring(self) -> None:
        try:
            os.read(self._fd, 8)
        except (BlockingIOError, InterruptedError):  # another wait's re-arming got there first
            pass
        self._armed = None
        now = perf_counter_ns()
        due = self._due
        while due and (due[0][0] <= now or due[0][2].done()):
            fut = heapq.heappop(due)[2]
            if not fut.done():
                fut.set_result(None)
        if due:
            self._set(due[0][0])

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        for *_, fut in self._due:
            fut.cancel()
        self._due.clear()


class _Yielding(Alarm):
    """Sleeps on the loop's timer until shortly before, then yields to the loop until the instant came;
    with lead_ns=0, only the timer (as late, or as early, as it fires)."""

    precise = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def until(self, when: int, lead_ns: int = LEAD_NS) -> None:
        spin = SPIN_NS if lead_ns else 0
        delay = when - perf_counter_ns()
        if delay > spin:
            await asyncio.sleep((delay - spin) / 1e9)
        while spin and perf_counter_ns() < when:
            await asyncio.sleep(0)

    def close(self) -> None:
        pass


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_TFD_TIMER_ABSTIME = 1
_LIBC: Any = None


def _timerfd() -> tuple[int, _Arm] | None:
    """A non-blocking timerfd on CLOCK_MONOTONIC and how to arm it at an absolute instant, or None."""
    info = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" not in info or "RAW" in info:  # the instants would be on another clock
        return None
    if hasattr(os, "timerfd_create"):  # Python 3.13
        fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        return fd, lambda fd, ns: os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME, initial=ns)
    if not sys.platform.startswith("linux"):
        return None
    global _LIBC
    try:
        if _LIBC is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                             ctypes.c_void_p]
            _LIBC = libc
        fd = _LIBC.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):  # no such call in this C library
        return None
    if fd < 0:
        return None
    spec = _Itimerspec()
    settime = _LIBC.timerfd_settime

    def arm(fd: int, ns: int) -> None:
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
    return fd, arm
