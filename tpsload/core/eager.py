"""Coroutines started at once, in the caller's step: Python 3.12's eager tasks, on 3.11 too.

A task made with create_task starts only after every callback already due. For a load tester that is
the difference between a request written when it is sent and one written after everything else the loop
had to do first (building the rest of a wave of requests): `start` runs a coroutine now, up to its first
wait, and returns one that finishes it, for whoever makes a task of it (aiohttp's request writer,
core.client). Unlike Python 3.12's eager tasks, the first step runs in the caller's task, so it must not
depend on which task it runs in (asyncio.current_task(), asyncio.timeout): aiohttp's writer does not
until it is cancelled, which cannot happen before its first wait.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine


def start(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """Run `coro` now, up to its first wait, and return a coroutine that finishes it where it is awaited
    or made a task of. An exception raised before the first wait is raised there, as if it had run there."""
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return _finished(done.value)
    except BaseException as e:
        return _raise(e)
    return _resume(coro, waiting)


def task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> "asyncio.Future[Any]":
    """The loop's tasks, except for a coroutine that `start` already ran to its end: a finished future,
    not a task still to run. aiohttp holds a response's connection until its writer task is done, so a
    response that ended before that task had run (a short answer, an error) would keep its connection
    from the next request, which then waits for one (measured: +60 µs of CPU a request at c=64 with
    2-token answers)."""
    if getattr(coro, "cr_code", None) is _FINISHED:
        done = loop.create_future()
        try:
            coro.send(None)
        except StopIteration as end:
            done.set_result(end.value)
        return done
    return asyncio.Task(coro, loop=loop, **kw)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Use task_factory on `loop` (once; a factory set by someone else is kept)."""
    if loop.get_task_factory() is None:
        loop.set_task_factory(task_factory)


async def _finished(value: Any) -> Any:
    return value


_FINISHED = _finished.__code__


async def _raise(e: BaseException) -> Any:
    raise e


async def _resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive `coro` on from where `start` left it, in this task: await what it waits on, hand back the
    outcome (a cancel of this task cancels what it awaits, and the coroutine sees CancelledError there)."""
    while True:
        try:
            if waiting is None:  # a bare yield: it asked only to run again later
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False  # taken up, as a task takes up what a coroutine yields
                await waiting
        except BaseException as e:
            try:
                waiting = coro.throw(e)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value
