"""Replaying saved feedback (backfills, tests): files through the same apply path.

A file is either one JSON document (an SES event, an SNS envelope, an SQS record,
or a list of any of these) or JSON Lines with one such document per line. A line
that is not JSON still goes through the parser, so it ends up a dead letter with
its error rather than stopping the replay.

JSON Lines are read a line at a time, so a replay's memory does not grow with its
files; a single document (a list, or an object over several lines) is read whole.
Batches are applied one after the other, in file order; the next batch is parsed (in
a thread) while the store applies the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from feedback.apply import BatchResult, Incoming, apply_parsed_batch, parse_all
from feedback.events import loads
from relay.config import Config
from relay.store import Store
from relay.timeutil import utcnow

REPLAY_BATCH = 500
# Allocations between two runs of the cyclic garbage collector while a replay runs (700
# by default): see rare_collections.
REPLAY_GC_THRESHOLD = 50_000


def bodies(path: Path) -> Iterator[Incoming]:
    """The queue bodies saved in `path`, read as they are needed."""
    with path.open(encoding="utf-8", errors="replace") as file:
        lines = enumerate(file, 1)
        number, first = next(((n, line) for n, line in lines if line.strip()), (0, ""))
        if not first:
            return  # nothing but blank lines
        if first.lstrip().startswith("[") or not _is_json(first):
            # One document over the whole file, else lines that are not JSON (dead letters).
            yield from _document(path, first + file.read(), number)
            return
        yield Incoming(_line(first), f"replay:{path}:{number}")
        for number, line in lines:
            if line.strip():
                yield Incoming(_line(line), f"replay:{path}:{number}")


def _is_json(text: str) -> bool:
    try:
        loads(text)
    except ValueError:
        return False
    return True


def _line(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def _document(path: Path, text: str, first_number: int) -> Iterator[Incoming]:
    """A file that is one JSON document: a list of bodies, or one body; else its lines."""
    try:
        whole = loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        for i, doc in enumerate(whole, 1):
            yield Incoming(json.dumps(doc), f"replay:{path}#{i}")
        return
    if isinstance(whole, dict):
        yield Incoming(text, f"replay:{path}")
        return
    for number, line in enumerate(text.split("\n"), first_number):
        if line.strip():
            yield Incoming(line, f"replay:{path}:{number}")


def batches(paths: Iterable[Path], size: int = REPLAY_BATCH) -> Iterator[list[Incoming]]:
    batch: list[Incoming] = []
    for path in paths:
        for item in bodies(path):
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def rare_collections(threshold: int = REPLAY_GC_THRESHOLD) -> Iterator[None]:
    """The cyclic garbage collector runs less often meanwhile.

    A parsed batch is thousands of small dicts and lists (decoded JSON), alive until the
    batch is applied; at the default threshold the collector runs every 700 allocations
    and goes over them again and again as they age, which took a third of the parser's
    time. They hold no cycles (reference counting frees them, whatever the threshold),
    so there is nothing for it to find there.
    """
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def replay(store: Store, paths: list[Path], config: Config) -> BatchResult:
    """Apply every body of `paths`, REPLAY_BATCH a transaction, in order; the totals."""
    with rare_collections():
        return await _applied(store, paths, config)


async def _applied(store: Store, paths: list[Path], config: Config) -> BatchResult:
    total = BatchResult()
    applying: asyncio.Task[BatchResult] | None = None
    try:
        for batch in batches(paths):
            now = utcnow()
            # In a thread of its own, so that meanwhile the loop hands the batch before to
            # the store (its commit thread, or PostgreSQL's) and the two overlap.
            parsed = await asyncio.to_thread(parse_all, batch, now)
            if applying is not None:
                total.add(await applying)
            applying = asyncio.ensure_future(apply_parsed_batch(store, parsed, config, now))
        if applying is not None:
            total.add(await applying)
            applying = None
    finally:
        if applying is not None and not applying.done():
            applying.cancel()
    return total
