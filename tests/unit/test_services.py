"""The service table (relay/ops/services.py): README prints it, the processes build from it,
and the loops' intervals are the table's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cli import serve, worker
from feedback.ingest import consumer
from feedback.notices import notifier
from feedback.reports import daily
from relay.loop import Loop
from relay.ops import services, state_mirror, supervisor
from relay.sending import sender
from tests.conftest import ROOT


def readme_table() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Services\n")
    end = text.index("\n#", start + 1)
    return "".join(line + "\n" for line in text[start:end].splitlines() if line.startswith("|"))


def test_readme_prints_the_table() -> None:
    assert readme_table() == services.render()


def test_names_are_unique_and_each_process_has_services() -> None:
    names = [s.name for s in services.SERVICES]
    assert len(names) == len(set(names))
    assert {s.process for s in services.SERVICES} == set(services.PROCESSES)


def test_the_intake_process_needs_no_aws() -> None:
    assert [s.name for s in services.of("serve") if s.needs_aws] == []
    assert {s.name for s in services.SERVICES if s.needs_aws} == {"sender", "feedback-consumer"}


def test_each_process_wires_exactly_its_services() -> None:
    assert set(serve.SERVE_SERVICES) == {s.name for s in services.of("serve")}
    assert set(worker.WORKER_SERVICES) == {s.name for s in services.of("worker")}


def test_loops_take_their_interval_from_the_table() -> None:
    assert sender.IDLE_POLL_SECONDS == services.every("sender") == 1.0
    assert notifier.POLL_SECONDS == services.every("notifier") == 1.0
    assert daily.POLL_SECONDS == services.every("daily-report") == 60.0
    assert supervisor.PARENT_POLL_SECONDS == services.every("parent-watch") == 0.5
    assert services.every("guard") == services.every("guard-view") == services.every("state-mirror") == 1.0


def test_numbers_written_in_the_table_are_the_codes() -> None:
    """The rows without an interval describe their timing in words; the numbers must hold."""
    wakes = services.BY_NAME["feedback-consumer"].wakes
    assert f"({consumer.SQS_WAIT_SECONDS} s)" in wakes
    assert f"{consumer.RETRY_PAUSE_SECONDS:g} s after an error" in wakes
    mirror = services.BY_NAME["state-mirror"].wakes
    first, most = state_mirror.BACKOFF_FIRST, state_mirror.BACKOFF_MAX
    assert f"after a failure {first:g} s, doubling up to {most:g} s" in mirror
    restarts = services.BY_NAME["worker-supervisor"].wakes
    first, most = supervisor.RESTART_BACKOFF_FIRST, supervisor.RESTART_BACKOFF_MAX
    assert f"restarts it after {first:g} s, doubling up to {most:g} s" in restarts


def test_every_refuses_a_service_without_an_interval() -> None:
    with pytest.raises(ValueError, match="smtp-intake"):
        services.every("smtp-intake")
    with pytest.raises(KeyError):
        services.every("no-such-service")


class Named(Loop):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def tick(self) -> float | None:
        return None


def test_start_builds_in_table_order_and_flattens() -> None:
    built: list[str] = []

    def factory(name: str, count: int):  # type: ignore[no-untyped-def]
        async def make(parts: list[str]) -> Sequence[Loop]:
            built.append(name)
            parts.append(name)
            return [Named(f"{name}-{i}") for i in range(count)]

        return make

    names = [s.name for s in services.of("worker")]
    factories = {name: factory(name, i % 3) for i, name in enumerate(names)}
    parts: list[str] = []
    loops = asyncio.run(services.start("worker", factories, parts))
    assert built == parts == names
    assert [loop.name for loop in loops] == [  # type: ignore[attr-defined]
        f"{name}-{k}" for i, name in enumerate(names) for k in range(i % 3)
    ]


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_start_refuses_wiring_that_differs_from_the_table(change: str) -> None:
    async def none(_parts: object) -> Sequence[Loop]:
        return []

    factories = {s.name: none for s in services.of("serve")}
    if change == "missing":
        del factories["smtp-intake"]
        expected = r"no factory for \['smtp-intake'\]"
    else:
        factories["sender"] = none
        expected = r"not in the service table: \['sender'\]"
    with pytest.raises(ValueError, match=expected):
        asyncio.run(services.start("serve", factories, None))
