"""One host name for the relay: the SMTP banner, notices' From and Message-ID, Reporting-MTA."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import socket
from pathlib import Path

import pytest

from relay.hostname import choose_hostname
from tests.conftest import Relay, run_cli, wait_until
from tests.support.smtp import message, send

BOUNCE = "bounce@simulator.amazonses.com"
SENDER = "sender@example.com"


@pytest.mark.parametrize("bad", ["not a host", "-leading.example", "a..b", "under_score.example", "x@y"])
def test_a_bad_hostname_is_a_configuration_error(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "ses-relay.toml"
    config.write_text(f'hostname = "{bad}"\n')
    result = run_cli("suppression", "list", data_dir=tmp_path / "data", config=config)
    assert result.returncode == 2
    assert "configuration error: hostname:" in result.stderr


def banner_and_ehlo(relay: Relay) -> tuple[str, str]:
    client = smtplib.SMTP(timeout=30)
    try:
        code, banner = client.connect("127.0.0.1", relay.port)
        assert code == 220
        code, ehlo = client.ehlo("client.example.com")
        assert code == 250
    finally:
        client.close()
    return banner.decode().split()[0], ehlo.decode().splitlines()[0].split()[0]


def bounce_notice(relay: Relay) -> email.message.EmailMessage:
    """Send to the bounce simulator and read the notice the sender gets in its Maildir."""
    code, _ = send(relay, [BOUNCE], message("hostname check"), sender=SENDER)
    assert code == 250
    new = wait_until(
        lambda: list((relay.data_dir / "mailboxes" / SENDER / "new").glob("*")) or None,
        timeout=20,
        what="a notice in the sender's Maildir",
    )
    return email.message_from_bytes(new[0].read_bytes(), policy=email.policy.default)


def names_in(notice: email.message.EmailMessage) -> dict[str, str]:
    """Every place a notice names the relay's host."""
    from_domain = notice["From"].addresses[0].domain
    assert notice["From"].addresses[0].username == "MAILER-DAEMON"
    message_id = re.fullmatch(r"<[^@>]+@([^>]+)>", notice["Message-ID"])
    assert message_id is not None, notice["Message-ID"]
    parts = {p.get_content_type(): p for p in notice.iter_parts()}
    status = parts["message/delivery-status"].as_string()
    reporting = re.search(r"^Reporting-MTA: dns; (\S+)$", status, re.MULTILINE)
    assert reporting is not None, status
    text = parts["text/plain"].get_content()
    system = re.search(r"mail delivery system at (\S+)\.\n", text)
    assert system is not None, text
    return {
        "from": from_domain,
        "message-id": message_id.group(1),
        "reporting-mta": reporting.group(1),
        "text": system.group(1),
    }


def test_the_configured_hostname_names_the_banner_and_the_notices(relay_factory) -> None:
    relay = relay_factory('hostname = "Relay.Test.Example"\n', sandbox=True)
    assert banner_and_ehlo(relay) == ("relay.test.example", "relay.test.example")
    notice = bounce_notice(relay)
    assert notice["From"].addresses[0].addr_spec == "MAILER-DAEMON@relay.test.example"
    assert set(names_in(notice).values()) == {"relay.test.example"}


def test_without_the_setting_banner_and_notices_agree_on_the_machines_name(relay_factory) -> None:
    """In a container getfqdn() may say localhost while gethostname() does not: one answer."""
    relay = relay_factory(sandbox=True)
    banner, ehlo = banner_and_ehlo(relay)
    notice = bounce_notice(relay)
    assert set(names_in(notice).values()) == {banner} == {ehlo}
    assert banner == choose_hostname(socket.getfqdn(), socket.gethostname())
