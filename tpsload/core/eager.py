"""Coroutines started at once, in the caller's step: Python 3.12's eager tasks, on 3.11 too.

A task made with create_task starts only after every callback already due. For a load tester that is
the difference between a request sent when it is due and one sent after everything else the loop had to
do first. `spawn` and `start` take a coroutine's first step at once and hand the rest over
(_FirstStep): `spawn` makes a task whose first step runs now, with the new task registered as the
current one (an open-loop request); `start` runs it in the caller's own task and returns a coroutine
that finishes it, for whoever awaits it or makes a task of it (aiohttp's request writer, core.client):
that first step must not depend on which task it runs in (asyncio.current_task(), asyncio.timeout), and
aiohttp's writer does not until it is cancelled, which cannot happen before its first wait.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
from asyncio import tasks as _tasks
from typing import Any, Coroutine


def start(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """Run `coro` now, in the caller's task, up to its first wait, and return a coroutine that finishes it
    where it is awaited or made a task of. An exception raised before the first wait is raised there, as
    if it had run there."""
    first = _FirstStep(coro)
    first.step()
    return first


def task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> "asyncio.Future[Any]":
    """The loop's tasks, except for a coroutine that `start` already ran to its end: a finished future,
    not a task still to run. aiohttp holds a response's connection until its writer task is done, so a
    response that ended before that task had run (a short answer, an error) would keep its connection
    from the next request, which then waits for one (measured: +60 µs of CPU a request at c=64 with
    2-token answers)."""
    if type(coro) is _FirstStep and coro.done and coro.error is None and not coro.started:
        coro.started = True
        done = loop.create_future()
        done.set_result(coro.value)
        return done
    return asyncio.Task(coro, loop=loop, **kw)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Use task_factory on `loop` (once; a factory set by someone else is kept)."""
    if loop.get_task_factory() is None:
        loop.set_task_factory(task_factory)


# asyncio's own record of the task running on a loop (private, stable since Python 3.7, what its tasks and
# 3.12's eager tasks use): spawn() registers the new task as current for its first step. Without them,
# spawn() makes a plain task.
_ENTER = getattr(_tasks, "_enter_task", None)
_LEAVE = getattr(_tasks, "_leave_task", None)


def spawn(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> "asyncio.Future[Any]":
    """A task of `coro` whose first step runs now, up to its first wait, as Python 3.12's eager tasks do:
    the task exists first and is the current one during that step (so asyncio.timeout, or anything else
    that asks which task it runs in, gets this task), in its own context. The task goes on from there."""
    if _ENTER is None or _LEAVE is None:
        return loop.create_task(coro)
    ctx = contextvars.copy_context()
    first = _FirstStep(coro)
    task = loop.create_task(first, context=ctx)
    outer = _tasks.current_task(loop)
    if outer is not None:
        _LEAVE(loop, outer)
    _ENTER(loop, task)
    try:
        ctx.run(first.step)
    finally:
        _LEAVE(loop, task)
        if outer is not None:
            _ENTER(loop, outer)
    return task


class _FirstStep(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine whose first step was already taken (step()): the first send() of whoever drives it on
    (a task, or an await) hands over what that step waited on (or its outcome); after that, everything
    goes to the coroutine itself. A cancel before then is thrown into the coroutine where it waits, as a
    task would."""

    __slots__ = ("coro", "started", "waiting", "done", "value", "error")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.started = False  # the task has taken over
        self.waiting: Any = None
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def step(self) -> None:
        try:
            self.waiting = self.coro.send(None)
        except StopIteration as end:
            self.done, self.value = True, end.value
        except BaseException as e:  # raised in the task, as if it had run there
            self.done, self.error = True, e

    def send(self, value: Any) -> Any:
        if self.started:
            return self.coro.send(value)
        self.started = True
        if self.error is not None:
            raise self.error
        if self.done:
            raise StopIteration(self.value)
        return self.waiting

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:  # type: ignore[override]
        self.started = True
        if self.done:  # nothing left to throw it into
            raise typ if val is None else val
        return self.coro.throw(typ if val is None else val)

    def close(self) -> None:
        self.coro.close()

    def __next__(self) -> Any:
        return self.send(None)

    def __await__(self) -> Any:
        return self
