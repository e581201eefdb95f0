"""Conversations under load (--turns): the runner, with conversations where it has requests.

Closed loop: -c streams, each running one conversation after another; -n counts
conversations. Open loop: --rate conversation starts per second, on the scheduler's plan,
-c capping the conversations in flight. Within a conversation each turn is meant to go
(`t_sched`) when the previous reply ended plus the think time, and waits for that; its body
holds the history with the reply that just came (workload/sessions.py). A failed turn ends
its conversation: the next turn would resend a history that never happened.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import Callable

from tpsload.config import RunConfig
from tpsload.core.client import Client
from tpsload.core.runner import PROGRESS_INTERVAL_S, START_DELAY_NS, Runner, RunState, Share
from tpsload.core.scheduler import open_plan
from tpsload.records import RequestRecord
from tpsload.workload.sessions import Sessions


class SessionRunner(Runner):
    """A Runner whose unit of load is a conversation (its workload is a `Sessions`)."""

    workload: Sessions

    def __init__(self, cfg: RunConfig, client: Client, workload: Sessions, state: RunState,
                 progress: Callable[[RunState], None] | None = None, share: Share | None = None) -> None:
        super().__init__(cfg, client, workload, state, progress, share)
        self._conv = 0  # the next conversation to start (closed loop)

    def _counted(self) -> int:
        return self._conv  # -n counts conversations

    async def _worker(self, end: int | None, deadline: int | None, warmup: bool, free: int) -> None:
        """One closed-loop stream: conversations one after another, the next due when the last one ended."""
        st = self.state
        while not st.stopping:
            k = self._conv
            if (end is not None and k >= end) or (deadline is not None and perf_counter_ns() >= deadline):
                return
            self._conv = k + 1
            free = await self._conversation(k, warmup, free, deadline)

    async def _conversation(self, k: int, warmup: bool, due: int, deadline: int | None, cap_wait: int = 0) -> int:
        """Conversation k's turns, each after the last reply plus the think time; returns when it ended."""
        s = self.workload
        st = self.state
        replies: list[str] = []
        for turn in range(1, s.turns_of(k) + 1):
            if turn > 1:
                due += s.think_ns(k, turn)
                if deadline is not None and due >= deadline:
                    break
                await self._think(due)
            if st.stopping:
                break
            i = self._next
            self._next = i + 1
            rec = RequestRecord(index=i, warmup=warmup, t_sched=due, cap_wait_ns=cap_wait if turn == 1 else 0,
                                session=k, turn=turn, slot=s.slot(k))
            await self._request(rec, s.turn_body(k, turn, replies))
            due = rec.t_end or rec.t_done or perf_counter_ns()
            if not rec.ok:
                break
            replies.append(rec.reply or "")
            rec.reply = None  # it lives on in `replies` only as long as the conversation
        return due

    async def _think(self, due: int) -> None:
        """Wait until `due`, in slices, so that a stop is heard during a long think time."""
        st = self.state
        while not st.stopping:
            left = due - perf_counter_ns()
            if left <= PROGRESS_INTERVAL_S * 1e9:
                await self._until(due)
                return
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def _open_loop(self) -> None:
        """--rate conversation starts per second on the scheduler's plan; -c caps conversations in flight."""
        cfg = self.cfg
        st = self.state
        t0 = perf_counter_ns() + START_DELAY_NS
        st.measure_t0 = t0
        times, deadline = open_plan(cfg, t0)
        cap = asyncio.Semaphore(cfg.load.concurrency) if cfg.load.concurrency else None
        pending: set[asyncio.Task[int]] = set()

        async def one(k: int, when: int, cap_wait: int) -> int:
            try:
                return await self._conversation(k, k < cfg.load.warmup, when, deadline, cap_wait)
            finally:
                if cap:
                    cap.release()

        try:
            for k, when in enumerate(times):
                if st.stopping or (deadline is not None and when >= deadline):
                    break
                await self._until(when)
                waited = bool(cap and cap.locked())
                if cap:
                    await cap.acquire()
                if st.stopping:
                    if cap:
                        cap.release()
                    break
                self._spawn(pending, one(k, when, max(0, perf_counter_ns() - when) if waited else 0))
            await self._settle(pending, cancelled=False)
        except asyncio.CancelledError:
            await self._settle(pending, cancelled=True)
