"""Choosing the relay's host name from the machine's names (pure)."""

from __future__ import annotations

import pytest

from relay.hostname import choose_hostname


@pytest.mark.parametrize(
    ("fqdn", "plain", "expected"),
    [
        ("relay.example.com", "relay", "relay.example.com"),
        ("localhost", "vm", "vm"),  # a container: the FQDN lookup finds the loopback line
        ("localhost.localdomain", "box7", "box7"),
        ("vm", "vm.example.net", "vm.example.net"),  # the qualified one, wherever it is
        ("Relay.Example.COM.", "x", "relay.example.com"),
        ("localhost", "localhost", "localhost"),  # nothing better known
        ("", "", "localhost"),
        ("ip6-localhost", "", "localhost"),
        ("", "only", "only"),
    ],
)
def test_choose_hostname(fqdn: str, plain: str, expected: str) -> None:
    assert choose_hostname(fqdn, plain) == expected
