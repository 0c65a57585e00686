"""Replaying saved feedback (backfills, tests): files through the same apply path.

A file is either one JSON document (an SES event, an SNS envelope, an SQS record,
or a list of any of these) or JSON Lines with one such document per line. A line
that is not JSON still goes through the parser, so it ends up a dead letter with
its error rather than stopping the replay.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from feedback.apply import BatchResult, Incoming, apply_batch
from relay.config import Config
from relay.store import Store
from relay.timeutil import utcnow

REPLAY_BATCH = 500


def bodies(path: Path) -> Iterator[Incoming]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        for i, doc in enumerate(whole, 1):
            yield Incoming(json.dumps(doc), f"replay:{path}#{i}")
        return
    if isinstance(whole, dict):
        yield Incoming(text, f"replay:{path}")
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield Incoming(line, f"replay:{path}:{number}")


async def replay(store: Store, paths: list[Path], config: Config) -> BatchResult:
    total = BatchResult()
    batch: list[Incoming] = []
    for path in paths:
        for item in bodies(path):
            batch.append(item)
            if len(batch) >= REPLAY_BATCH:
                total.add(await apply_batch(store, batch, config, utcnow()))
                batch = []
    if batch:
        total.add(await apply_batch(store, batch, config, utcnow()))
    return total
