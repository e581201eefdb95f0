"""core.eager: a coroutine run at once, up to its first wait, and finished in a task."""

import asyncio
import contextvars

import pytest

from tpsload.core import eager


def test_a_started_coroutine_runs_now_and_finishes_in_a_task():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[object] = []

        async def waits(fut: asyncio.Future) -> object:
            log.append("started")
            try:
                v = await fut
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            log.append(v)
            return v

        fut = loop.create_future()
        coro = eager.start(waits(fut))
        assert log == ["started"]  # up to its first wait, before any task was made of it
        task = loop.create_task(coro)
        await asyncio.sleep(0)
        fut.set_result(7)
        assert await task == 7 and log == ["started", 7]

        log.clear()
        fut = loop.create_future()
        task = loop.create_task(eager.start(waits(fut)))
        await asyncio.sleep(0)
        task.cancel()  # cancels what it waits on; the coroutine sees CancelledError where it waits
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["started", "cancelled"] and fut.cancelled()

        async def fails() -> None:
            raise OSError("socket gone")

        task = loop.create_task(eager.start(fails()))  # raised in the task, as if it had run there
        with pytest.raises(OSError, match="socket gone"):
            await task

        async def writes() -> None:
            log.append("written")

        done = eager.task_factory(loop, eager.start(writes()))
        assert done.done() and done.result() is None and log[-1] == "written"  # no task left to run
        other = eager.task_factory(loop, asyncio.sleep(0))
        assert isinstance(other, asyncio.Task) and await other is None
        failed = eager.task_factory(loop, eager.start(fails()))  # an error is raised in a task, as before
        with pytest.raises(OSError, match="socket gone"):
            await failed

        # or awaited where it is: on from its first wait (a future, a bare yield), its outcome, its error
        fut = loop.create_future()
        coro = eager.start(waits(fut))
        loop.call_soon(fut.set_result, 9)
        assert await coro == 9 and log[-2:] == ["started", 9]

        async def yields() -> str:
            log.append("before")
            await asyncio.sleep(0)
            return "after"

        coro = eager.start(yields())
        assert log[-1] == "before" and await coro == "after"
        with pytest.raises(OSError, match="socket gone"):
            await eager.start(fails())

    asyncio.run(main())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_spawn_runs_the_first_step_now_as_its_own_task(loop_kind):
    """An eager task's first step runs before anything the loop already had to do, with itself as the
    current task (a deadline entered there is its own), in a context of its own; a cancel before its first
    turn reaches the coroutine where it waits."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="caller")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        order: list[object] = []
        outer = asyncio.current_task()

        async def req(name: str) -> str:
            order.append((name, asyncio.current_task() is not outer))
            var.set(name)
            await asyncio.sleep(0)
            return var.get()

        loop.call_soon(order.append, "due")
        plain = loop.create_task(req("plain"))
        now = eager.spawn(req("eager"), loop)
        assert order == [("eager", True)] and var.get() == "caller" and asyncio.current_task() is outer
        assert await now == "eager" and await plain == "plain"
        assert order == [("eager", True), "due", ("plain", True)]

        async def slow() -> None:
            async with asyncio.timeout(0.01):  # entered in the first step: the spawned task's deadline
                await asyncio.sleep(5)

        with pytest.raises(TimeoutError):
            await eager.spawn(slow(), loop)
        assert not outer.cancelling()  # the caller was not the one cancelled

        seen: list[str] = []

        async def waits() -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        t = eager.spawn(waits(), loop)
        t.cancel()  # before its first turn
        with pytest.raises(asyncio.CancelledError):
            await t
        assert seen == ["cancelled"]

        async def at_once() -> int:
            return 5

        async def fails() -> None:
            raise OSError("x")

        assert await eager.spawn(at_once(), loop) == 5
        with pytest.raises(OSError):
            await eager.spawn(fails(), loop)

    if loop_kind == "uvloop":  # the loop tpsload runs on where it is installed
        pytest.importorskip("uvloop").run(main())
    else:
        asyncio.run(main())
