"""core.clock: waits for an instant of perf_counter_ns, on asyncio's loop and uvloop."""

import asyncio
import random
import sys
import time

import pytest
import uvloop

from tpsload.core import clock
from tpsload.core.clock import Alarm
from tpsload.core.health import LoopLagSampler

LOOPS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a timerfd is Linux's")


@linux
@pytest.mark.parametrize("run", LOOPS)
def test_waits_end_at_their_instants_in_order(run):
    """120 waits at once, for instants 5-34 ms ahead in random order: none returns before its instant, and
    they return in the order of their instants; a cancelled wait takes no other with it, and one for an
    instant past returns at once."""
    async def main():
        alarm = Alarm.open()
        assert alarm.precise and type(alarm) is Alarm
        t0 = time.perf_counter_ns() + 5_000_000
        rng = random.Random(5)
        whens = [t0 + rng.randrange(30) * 1_000_000 for _ in range(120)]
        woke = []

        async def wait(k):
            await alarm.until(whens[k])
            woke.append((k, time.perf_counter_ns()))

        tasks = [asyncio.get_running_loop().create_task(wait(k)) for k in range(120)]
        cancelled = tasks[7]
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert cancelled.cancelled() and len(woke) == 119
        assert all(t >= whens[k] for k, t in woke)
        order = [whens[k] for k, _ in woke]
        assert order == sorted(order)
        past = time.perf_counter_ns()
        await alarm.until(past - 1)
        alarm.close()
        alarm.close()  # twice is harmless
    run(main())


@linux
@pytest.mark.parametrize("run", LOOPS)
def test_the_alarm_waits_without_spinning(run):
    """20 waits of 10 ms: on the alarm they cost a fraction of the CPU of the old wait, which yielded to
    the loop for the last 2 ms of each (measured as a ratio, the same loop, the same run)."""
    async def cpu_of(alarm):
        c0 = time.process_time()
        for _ in range(20):
            await alarm.until(time.perf_counter_ns() + 10_000_000)
        return time.process_time() - c0

    async def main():
        loop = asyncio.get_running_loop()
        alarm = Alarm.open()
        precise = await cpu_of(alarm)
        alarm.close()
        spinning = await cpu_of(clock._Yielding(loop))
        assert precise < 0.5 * spinning, (precise, spinning)
    run(main())


@pytest.mark.parametrize("run", LOOPS)
def test_without_a_timerfd_the_wait_yields_until_the_instant(run, monkeypatch):
    monkeypatch.setattr(clock, "_timerfd", lambda: None)

    async def main():
        alarm = Alarm.open()
        assert not alarm.precise
        for ahead in (0, 500_000, 3_000_000):
            when = time.perf_counter_ns() + ahead
            await alarm.until(when)
            assert time.perf_counter_ns() >= when
        s = LoopLagSampler(interval_s=0.002)  # on the loop's timer alone there
        s.start(alarm)
        while len(s.lags_ms) < 20:
            await asyncio.sleep(0.01)
        s.stop()
        alarm.close()
    run(main())


@linux
def test_loop_lag_on_the_alarm_is_never_negative():
    """uvloop's timers run on a millisecond clock, so the old sampler read an idle loop as up to 1 ms
    early (negative lags); on the alarm a lag is how late the loop really was."""
    async def main():
        alarm = Alarm.open()
        s = LoopLagSampler(interval_s=0.002)
        s.start(alarm)
        while len(s.lags_ms) < 100:
            await asyncio.sleep(0.01)
        s.stop()
        alarm.close()
        return list(s.lags_ms)
    lags = uvloop.run(main())
    assert min(lags) >= 0.0 and len(lags) >= 100
