"""Ctrl-C and SIGTERM, one way for every stage of a run and every place its load runs.

Only the process the user started listens to signals (`Interrupts`). The first SIGINT or
SIGTERM stops new requests and gives those in flight --grace seconds, then cancels them;
a second cancels them at once. What that means is up to whatever runs at the moment (a
`Target`): the runner, the worker processes or the Ray actors (which hear it as a message
from the parent, never from the terminal), or pre-flight and prompt preparation, which have
nothing to let finish and end at once. A target attached after the signal is told at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import contextmanager
from typing import Awaitable, Callable, Iterator, Protocol, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Target(Protocol):
    def stop(self, reason: str) -> None:
        """Start no new request; in-flight ones may finish."""

    def cancel_all(self) -> None:
        """Cancel every request in flight now."""


class Relay:
    """Passes stop and cancel to the current target, and replays them to one attached later.

    A worker's end of the parent's messages is a bare Relay; `Interrupts` is one fed by signals.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.cancelled = False
        self._target: Target | None = None

    def attach(self, target: Target) -> None:
        self._target = target
        if self.reason is not None:
            target.stop(self.reason)
        if self.cancelled:
            target.cancel_all()

    def detach(self) -> None:
        self._target = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self._target is not None:
                self._target.stop(reason)

    def cancel_all(self) -> None:
        self.cancelled = True
        if self._target is not None:
            self._target.cancel_all()


class Interrupts(Relay):
    """The run's SIGINT/SIGTERM handler: first = stop, grace, cancel; second = cancel now."""

    def __init__(self, grace_s: float, notice: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.grace_s = grace_s
        self.signal: int | None = None
        self.notice = notice
        self._timer: asyncio.TimerHandle | None = None
        self._installed: list[int] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                continue
            self._installed.append(sig)

    def remove(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def on_signal(self, sig: int) -> None:
        if self.signal is not None:
            self.cancel_all()
            return
        self.signal = sig
        name = signal.Signals(sig).name
        if self.notice is not None:
            self.notice(f"tpsload: {name}: starting no new requests; those in flight get {self.grace_s:g} s "
                        f"(--grace), then are cancelled; {name} again cancels them now")
        self.stop(f"interrupted ({name})")
        self._timer = asyncio.get_running_loop().call_later(self.grace_s, self.cancel_all)


class Interrupted(Exception):
    """A stage with nothing in flight to finish was ended by stop or cancel."""


class _EndsTask:
    def __init__(self, task: asyncio.Future[object]) -> None:
        self.task = task

    def stop(self, reason: str) -> None:
        self.task.cancel()

    def cancel_all(self) -> None:
        self.task.cancel()


async def interruptible(relay: Relay, aw: Awaitable[T]) -> T:
    """Await `aw`, ended at once by the relay's stop or cancel (raising Interrupted).

    For pre-flight and prompt preparation: no measured request is in flight there, so
    there is nothing for --grace to wait for.
    """
    task = asyncio.ensure_future(aw)
    relay.attach(_EndsTask(task))
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and (relay.reason is not None or relay.cancelled):
            raise Interrupted(relay.reason or "interrupted") from None
        raise
    finally:
        relay.detach()


@contextmanager
def children_ignore_signals() -> Iterator[None]:
    """Processes started inside ignore SIGINT/SIGTERM from their first instruction on.

    A terminal's Ctrl-C goes to the whole process group: worker processes must not take it
    as their own (the parent tells them, once, with --grace), nor die of it while starting.
    Signals are blocked meanwhile, so one that arrives now reaches this process afterwards.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def ignore_signals() -> None:
    """In a worker started by children_ignore_signals: keep ignoring, stop blocking (pending ones are dropped)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


class Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM heard outside a run's event loop: it unwinds like Ctrl-C, so every `finally`
    on the way stops what was started (a matrix's server)."""

    def __init__(self, sig: int) -> None:
        super().__init__(signal.Signals(sig).name)
        self.signal = sig


def _raise(sig: int, frame: object) -> None:
    raise Signalled(sig)


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise Signalled (SIGTERM would otherwise end the process at once,
    past every `finally`). A run's event loop takes the signals over (Interrupts) and hands them back
    to the defaults when it closes: call this again after each."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _raise)


def default_signals() -> None:
    """Undo raise_on_signals."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
