"""core.eager: a coroutine run at once, up to its first wait, and finished in a task."""

import asyncio

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

    asyncio.run(main())
