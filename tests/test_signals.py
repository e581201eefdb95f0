"""core/signals.py in-process: one SIGINT/SIGTERM mechanism for every stage and backend of a run."""

import asyncio
import os
import signal

import pytest

from tpsload.core.signals import Interrupted, Interrupts, Relay, interruptible


class Target:
    def __init__(self):
        self.events = []
        self.stopped = asyncio.Event()
        self.cancelled = asyncio.Event()

    def stop(self, reason):
        self.events.append(("stop", reason))
        self.stopped.set()

    def cancel_all(self):
        self.events.append(("cancel",))
        self.cancelled.set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_stops_then_cancels_after_grace(sig):
    async def main():
        loop = asyncio.get_running_loop()
        target = Target()
        intr = Interrupts(grace_s=0.3)
        intr.install()
        try:
            intr.attach(target)
            t = loop.time()
            os.kill(os.getpid(), sig)
            await asyncio.wait_for(target.cancelled.wait(), 10)
            return target.events, loop.time() - t, intr.signal
        finally:
            intr.remove()

    events, waited, got = asyncio.run(main())
    assert events == [("stop", f"interrupted ({signal.Signals(sig).name})"), ("cancel",)] and got == sig
    assert waited >= 0.3  # the grace was given
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # removed: Ctrl-C is Python's again


def test_second_signal_cancels_at_once():
    async def main():
        target = Target()
        intr = Interrupts(grace_s=60)
        intr.install()
        try:
            intr.attach(target)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(target.stopped.wait(), 10)
            assert not target.cancelled.is_set()
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(target.cancelled.wait(), 10)  # not the 60 s of grace
            return target.events
        finally:
            intr.remove()

    assert asyncio.run(main()) == [("stop", "interrupted (SIGINT)"), ("cancel",)]


def test_a_target_attached_later_hears_at_once_and_a_stage_with_nothing_in_flight_ends():
    async def main():
        relay = Relay()
        relay.stop("interrupted (SIGINT)")  # before the load was started: e.g. during pre-flight
        late = Target()
        relay.attach(late)
        hung = asyncio.get_running_loop().create_future()  # a pre-flight that never answers
        with pytest.raises(Interrupted, match="SIGINT"):
            await asyncio.wait_for(interruptible(relay, hung), 10)
        return late.events

    assert asyncio.run(main()) == [("stop", "interrupted (SIGINT)")]


def test_interruptible_returns_the_value_when_not_interrupted():
    async def main():
        async def answer():
            await asyncio.sleep(0)
            return 42

        return await interruptible(Relay(), answer())

    assert asyncio.run(main()) == 42
