"""The loop base (relay/loop.py) on a real event loop, and the two process loops built on
it that no other test reaches: the worker supervisor (real child processes) and the
parent watch. Times are measured, with margins for a busy 2-core machine."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from relay.loop import Loop
from relay.ops import supervisor
from relay.ops.supervisor import ParentWatch, WorkerSupervisor

pytestmark = pytest.mark.solo  # times a rate: runs alone (see Makefile)


class Script(Loop):
    """Returns the given rests in turn (then None), noting when each round began."""

    def __init__(self, *rests: float | None) -> None:
        super().__init__()
        self.rests = list(rests)
        self.rounds: list[float] = []
        self.events: list[str] = []
        self.extra: list[Awaitable[object]] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def tick(self) -> float | None:
        self.rounds.append(time.monotonic())
        return self.rests.pop(0) if self.rests else None

    async def on_stop(self) -> None:
        self.events.append("stop")

    def rest_ends_on(self) -> list[Awaitable[object]]:
        return self.extra


def gaps(rounds: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(rounds)]


def test_rests_as_long_as_the_round_says_then_ends_when_it_says_so() -> None:
    loop = Script(0.3, 0.0, 0.2, None)
    asyncio.run(asyncio.wait_for(loop.run(asyncio.Event()), timeout=5))
    assert loop.events == ["start", "stop"]
    first, second, third = gaps(loop.rounds)
    assert 0.28 <= first < 1.0
    assert second < 0.1
    assert 0.18 <= third < 1.0


def test_a_wake_cuts_the_rest_short() -> None:
    async def scenario() -> Script:
        loop = Script(30.0, None)
        task = asyncio.create_task(loop.run(asyncio.Event()))
        await asyncio.sleep(0.2)
        loop.wake("new mail")
        await asyncio.wait_for(task, timeout=5)
        return loop

    loop = asyncio.run(scenario())
    assert len(loop.rounds) == 2
    assert 0.15 <= gaps(loop.rounds)[0] < 2.0


def test_a_wake_during_a_round_skips_the_rest_after_it() -> None:
    class WokenWhileWorking(Script):
        async def tick(self) -> float | None:
            rest = await super().tick()
            if len(self.rounds) == 1:
                self.wake()  # as the intake does while the sender is claiming
            return rest

    loop = WokenWhileWorking(30.0, None)
    asyncio.run(asyncio.wait_for(loop.run(asyncio.Event()), timeout=5))
    assert len(loop.rounds) == 2
    assert gaps(loop.rounds)[0] < 1.0


def test_stop_ends_a_long_rest_at_once_and_on_stop_runs() -> None:
    async def scenario() -> tuple[Script, float]:
        loop = Script(*[30.0] * 5)
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        return loop, time.monotonic() - started

    loop, took = asyncio.run(scenario())
    assert len(loop.rounds) == 1
    assert took < 1.0
    assert loop.events == ["start", "stop"]


def test_a_stop_set_before_run_means_no_round() -> None:
    stop = asyncio.Event()
    stop.set()
    loop = Script(0.0)
    asyncio.run(loop.run(stop))
    assert loop.rounds == []
    assert loop.events == ["start", "stop"]


def test_rest_ends_when_what_the_loop_waits_on_completes() -> None:
    async def scenario() -> Script:
        loop = Script(30.0, None)
        loop.extra = [asyncio.sleep(0.2)]
        await asyncio.wait_for(loop.run(asyncio.Event()), timeout=5)
        return loop

    loop = asyncio.run(scenario())
    assert 0.15 <= gaps(loop.rounds)[0] < 2.0


def test_an_error_in_a_round_ends_the_loop_and_still_runs_on_stop() -> None:
    class Broken(Script):
        async def tick(self) -> float | None:
            await super().tick()
            raise RuntimeError("round failed")

    loop = Broken()
    with pytest.raises(RuntimeError, match="round failed"):
        asyncio.run(loop.run(asyncio.Event()))
    assert loop.events == ["start", "stop"]


def test_rounds_without_rest_let_other_tasks_run() -> None:
    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        busy = Script(*[0.0] * 100_000)
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            for _ in range(50):
                ticks += 1
                await asyncio.sleep(0)
            stop.set()

        await asyncio.wait_for(asyncio.gather(busy.run(stop), other()), timeout=10)
        return len(busy.rounds), ticks

    rounds, ticks = asyncio.run(scenario())
    assert ticks == 50
    assert 0 < rounds < 100_000


# --------------------------------------------------------------------------- the process loops


def test_parent_watch_sets_the_stop_when_the_parent_is_gone() -> None:
    async def scenario(parent_pid: int) -> tuple[float | None, bool]:
        watch = ParentWatch(parent_pid)
        watch._stop = stop = asyncio.Event()  # as run() does, without PR_SET_PDEATHSIG on pytest
        return await watch.tick(), stop.is_set()

    assert asyncio.run(scenario(os.getppid())) == (supervisor.PARENT_POLL_SECONDS, False)
    assert asyncio.run(scenario(os.getppid() + 1_000_000)) == (None, True)


def child(code: str) -> list[str]:
    """A worker stand-in; the supervisor appends --wake-fd N --parent-pid P to it."""
    return [sys.executable, "-c", code]


def test_supervisor_restarts_an_exiting_worker_with_growing_backoff(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(3)"

    async def scenario() -> WorkerSupervisor:
        sup = WorkerSupervisor(child(code))
        stop = asyncio.Event()
        task = asyncio.create_task(sup.run(stop))
        await asyncio.sleep(5.0)  # starts at ~0, ~1 (after 1 s) and ~3 s (after 2 s more); next at ~7
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        return sup

    sup = asyncio.run(scenario())
    times = [float(line) for line in starts.read_text().split()]
    assert len(times) == 3
    assert sup.restarts == 3
    first, second = gaps(times)
    assert 0.9 <= first < 1.8
    assert 1.9 <= second < 2.8


def test_supervisor_passes_wakes_on_and_stops_its_worker(tmp_path: Path) -> None:
    got = tmp_path / "got"
    code = (
        "import os, sys, time\n"
        "fd = int(sys.argv[sys.argv.index('--wake-fd') + 1])\n"
        "data = os.read(fd, 1)\n"
        f"open({str(got) + '.tmp'!r}, 'wb').write(data)\n"
        f"os.rename({str(got) + '.tmp'!r}, {str(got)!r})\n"
        "time.sleep(60)\n"
    )

    async def scenario() -> tuple[WorkerSupervisor, float]:
        sup = WorkerSupervisor(child(code))
        stop = asyncio.Event()
        task = asyncio.create_task(sup.run(stop))
        deadline = time.monotonic() + 10
        while not got.exists() and time.monotonic() < deadline:
            sup.wake("submission")
            await asyncio.sleep(0.1)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=supervisor.STOP_GRACE_SECONDS + 5)
        return sup, time.monotonic() - started

    sup, took = asyncio.run(scenario())
    assert got.read_bytes() == b"!"
    assert sup.restarts == 0
    assert took < 5.0  # SIGTERM ends the sleeping worker; no grace period needed
