"""moto as a real SES endpoint for tests, and ways to read back what it received.

What moto 5.2 keeps of a SendRawEmail / SESv2 SendEmail(Raw) call, in
`ses_backends[account][region].sent_messages` (RawMessage objects; the same list
for v1 and v2, also visible over HTTP in /moto-api/data.json under "ses" ->
"RawMessage"):
  - id, source, raw_data (the raw message *decoded as UTF-8 text*: str, not bytes)
  - destinations: the Destinations given PLUS every address in the raw To/Cc/Bcc
    headers appended (so duplicates; and its 50-recipient check counts both)
It does NOT keep ConfigurationSetName or Tags/EmailTags (accepted and dropped,
and a configuration set that does not exist is not refused). GetSendQuota says
MaxSendRate 1.0, Max24HourSend 200, SentLast24Hours = sum of those destinations.
SESv2 GetAccount is not implemented (404).

ConfigurationSetName and Tags can still be read back from moto's request
recorder, which logs every request body it receives: `recorded_sends` parses
those. The recorder is process-global state of moto (one per process, shared by
every moto server in it), switched on and off over the /moto-api/recorder/ API.
Use with conftest's `moto_server` fixture (its URL is what these take).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends


@dataclass(frozen=True)
class RecordedSend:
    """One send call as moto's recorder saw it on the wire."""

    api: str  # "v1" (SendRawEmail) or "v2" (SendEmail)
    source: str | None
    destinations: tuple[str, ...]
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    raw: bytes


def sent_messages(region: str = "us-east-1", account: str = DEFAULT_ACCOUNT_ID) -> list[object]:
    """moto's RawMessage objects (id, source, destinations, raw_data) for v1 and v2 sends."""
    return list(ses_backends[account][region].sent_messages)


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=5).read()


@contextmanager
def recording(url: str, path: Path) -> Iterator[None]:
    """Record every request moto receives into `path` while the block runs.

    The recorder's file is fixed when moto is imported (MOTO_RECORDER_FILEPATH,
    default ./moto_recording); pointing it elsewhere afterwards needs its private
    `_location`, which is the price of not writing into the working directory.
    """
    from moto.moto_api import recorder

    recorder._location = str(path)
    _post(f"{url}/moto-api/recorder/reset-recording")
    _post(f"{url}/moto-api/recorder/start-recording")
    try:
        yield
    finally:
        _post(f"{url}/moto-api/recorder/stop-recording")


def recorded_sends(url: str) -> list[RecordedSend]:
    """The SendRawEmail / SESv2 SendEmail calls in the current recording, in order."""
    with urllib.request.urlopen(f"{url}/moto-api/recorder/download-recording", timeout=5) as response:
        text = response.read().decode()
    sends: list[RecordedSend] = []
    for line in text.splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        if entry.get("url", "").endswith("/v2/email/outbound-emails"):
            doc = json.loads(body)
            sends.append(
                RecordedSend(
                    api="v2",
                    source=doc.get("FromEmailAddress"),
                    destinations=tuple(doc.get("Destination", {}).get("ToAddresses", [])),
                    configuration_set=doc.get("ConfigurationSetName"),
                    tags=tuple((t["Name"], t["Value"]) for t in doc.get("EmailTags", [])),
                    raw=base64.b64decode(doc["Content"]["Raw"]["Data"]),
                )
            )
            continue
        params = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        if params.get("Action") != "SendRawEmail":
            continue
        index = 1
        tags: list[tuple[str, str]] = []
        while f"Tags.member.{index}.Name" in params:
            tags.append((params[f"Tags.member.{index}.Name"], params.get(f"Tags.member.{index}.Value", "")))
            index += 1
        members = sorted(
            (int(k.rsplit(".", 1)[1]), v) for k, v in params.items() if k.startswith("Destinations.member.")
        )
        sends.append(
            RecordedSend(
                api="v1",
                source=params.get("Source"),
                destinations=tuple(v for _, v in members),
                configuration_set=params.get("ConfigurationSetName"),
                tags=tuple(tags),
                raw=base64.b64decode(params["RawMessage.Data"]),
            )
        )
    return sends
