"""The service table: every task serve and its worker run, where, and how it wakes.

As Postfix's master.cf names each of its programs with how it is woken, this table
names each service of the relay: the process it runs in (`serve`, which needs no AWS
credentials, or the `worker` it starts), how it wakes, and whether it talks to AWS.
The periodic loops take their usual interval (`every`) from here, serve and the
worker build their tasks from it (`start`), and README's "Services" table is
`render()`'s output, checked by a test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from relay.loop import Loop

Process = Literal["serve", "worker"]
PROCESSES: tuple[Process, ...] = ("serve", "worker")


@dataclass(frozen=True)
class Service:
    name: str
    process: Process
    wakes: str  # for people; "{every}" stands for the interval below
    does: str
    every: float | None = None  # seconds between rounds when idle; None: woken by events only
    needs_aws: bool = False  # talks to AWS itself (the intake never does)


# In the order each process builds them: serve opens its SMTP listeners last, once what
# they rely on (the pause states, the worker's wake pipe) is there.
SERVICES: tuple[Service, ...] = (
    Service(
        "metrics", "serve", "on each request",
        "`/metrics`, `/healthz`, `/readyz` (when `[metrics] listen` is set)",
    ),
    Service(
        "state-mirror", "serve",
        "a PostgreSQL notification, else every {every}; after a failure 1 s, doubling up to 10 s",
        "with `[state] url`: keeps this host's copy of the shared suppressions and class pauses, "
        "which RCPT and DATA are checked against",
        every=1.0,
    ),
    Service(
        "guard-view", "serve", "every {every}",
        "reads the class pause states the intake answers DATA with (the mirror wakes it at a change)",
        every=1.0,
    ),
    Service(
        "worker-supervisor", "serve", "when the worker exits: restarts it after 1 s, doubling up to 30 s",
        "starts the worker, passes the intake's wakes to it through a pipe, restarts it",
    ),
    Service(
        "smtp-intake", "serve", "on each connection",
        "the SMTP listeners: RCPT and DATA checks, the spool commit, then a wake for the sender",
    ),
    Service(
        "sender", "worker", "a wake through serve's pipe, else every {every} (sooner when a retry is due)",
        "the spool out to SES (DKIM-signed, at most 50 recipients a call); outcomes written back",
        every=1.0, needs_aws=True,
    ),
    Service(
        "state-shipper", "worker",
        "a wake through serve's pipe or from the sender, else every {every}; "
        "after a failure 0.5 s, doubling up to 5 s",
        "with `[state] url`: the outbox (accepts, outcomes, refusal counts committed locally) to "
        "PostgreSQL, in order; then prunes the local copies PostgreSQL keeps",
        every=1.0,
    ),
    Service(
        "heartbeat", "worker", "every {every} (with `[state] url` set)",
        "tells the relays sharing the state that this one is alive and sending; sends at its share "
        "of `[ses] max_send_rate`",
        every=1.0,
    ),
    Service(
        "notifier", "worker", "every {every} while no notice is due",
        "delivers the notices owed to senders (the `ses` route spools them for the sender)",
        every=1.0,
    ),
    Service(
        "guard", "worker", "every {every}; judges the rates every `[guard] check_every`",
        "pauses a class whose bounce or complaint rate runs too high, and mails `[guard] alert_to`",
        every=1.0,
    ),
    Service(
        "feedback-consumer", "worker", "the SQS long poll (20 s); 5 s after an error",
        "SES events to statuses, suppressions and notices; one per queue in `[feedback] queue_urls` "
        "(the local feed under `--sandbox`)",
        needs_aws=True,
    ),
    Service(
        "daily-report", "worker", "every {every}; sends once a day from `[report] hour`",
        "spools the daily report to `[report] daily_to` (when set)",
        every=60.0,
    ),
    Service(
        "parent-watch", "worker", "every {every}",
        "stops the worker when its serve is gone (when started by serve)",
        every=0.5,
    ),
)  # fmt: skip
BY_NAME: Mapping[str, Service] = {s.name: s for s in SERVICES}


def every(name: str) -> float:
    """The named service's interval; KeyError/ValueError for a name without one."""
    interval = BY_NAME[name].every
    if interval is None:
        raise ValueError(f"service {name!r} has no interval")
    return interval


def of(process: Process) -> tuple[Service, ...]:
    return tuple(s for s in SERVICES if s.process == process)


P = TypeVar("P")
Factory = Callable[[P], Awaitable[Sequence[Loop]]]


async def start(process: Process, factories: Mapping[str, Factory[P]], parts: P) -> list[Loop]:
    """Build the process's services in table order: each factory gets the process's
    shared parts and returns its loops (none when it is not configured, one or more
    otherwise; a server it started is the process's to close). A service without a
    factory, or a factory without a service, is a wiring bug and raises."""
    wanted = {s.name for s in of(process)}
    if wanted != set(factories):
        missing, extra = sorted(wanted - set(factories)), sorted(set(factories) - wanted)
        raise ValueError(f"{process}: no factory for {missing}; not in the service table: {extra}")
    loops: list[Loop] = []
    for service in of(process):
        loops.extend(await factories[service.name](parts))
    return loops


def _seconds(value: float) -> str:
    return f"{value:g} s"


def render() -> str:
    """The table as Markdown, as README shows it."""
    lines = ["| service | process | wakes | needs AWS | does |", "|---|---|---|---|---|"]
    for s in SERVICES:
        wakes = s.wakes.format(every=_seconds(s.every)) if s.every is not None else s.wakes
        lines.append(f"| {s.name} | {s.process} | {wakes} | {'yes' if s.needs_aws else 'no'} | {s.does} |")
    return "\n".join(lines) + "\n"
