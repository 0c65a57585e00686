"""MAIL and RCPT paths over a real SMTP session on 127.0.0.1: every odd form gets the same
replies from RelaySMTP (its fast path for `<local@domain>`, relay/intake/paths.py) as
from the same server parsing every path with aiosmtpd's own `_getaddr`, the oracle.
"""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from relay.intake.smtp import RelaySMTP
from tests.support.intake import Client, Intake, listener_on_any_port, run_intake, serving
from tests.unit.test_paths import ODD_FORMS

ANY_PORT = {"listeners": [listener_on_any_port()]}


async def replies_to(intake: Intake, forms: list[str]) -> list[tuple[str, str, str]]:
    """For each form: the replies to `MAIL FROM:form`, to `RCPT TO:form`, and to RSET."""
    answers = []
    async with serving(intake) as port, Client.connected(port) as client:
        await client.hello()
        for form in forms:
            mail = await client.cmd(f"MAIL FROM:{form}")
            rcpt = await client.cmd(f"RCPT TO:{form}")
            answers.append((mail, rcpt, await client.cmd("RSET")))
        await client.cmd("QUIT")
    return answers


def test_odd_paths_get_the_replies_of_aiosmtpd_parser(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    forms = [*ODD_FORMS, "<r@example.org> FOO=bar", "<r@example.org> SIZE=abc", "<a@example.com> BODY=7BIT"]
    seen: dict[str, list[tuple[str, str, str]]] = {}

    async def scenario(intake: Intake) -> None:
        seen["fast"] = await replies_to(intake, forms)
        with monkeypatch.context() as patch:
            patch.setattr(RelaySMTP, "_getaddr", SMTP._getaddr)
            seen["oracle"] = await replies_to(intake, forms)

    run_intake(tmp_path, scenario, ANY_PORT)
    assert len(seen["fast"]) == len(forms)
    for form, fast, oracle in zip(forms, seen["fast"], seen["oracle"], strict=True):
        assert fast == oracle, form
    taken = [form for form, (mail, _, _) in zip(forms, seen["fast"], strict=True) if mail.startswith("250")]
    assert "<a@example.com> SIZE=100 BODY=8BITMIME" in taken and "<>" in taken
