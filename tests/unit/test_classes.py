"""Class resolution (relay/intake/classes.py `resolve`), every rule and its precedence, as a table.

The first rule that matches decides: 1. X-Message-Class; 2. X-SES-CONFIGURATION-SET naming
a configured class's set; 3. the authenticated user's default class; 4. the listener's
default class; 5. List-Id / List-Unsubscribe -> list, Precedence: bulk -> bulk; 6. the
configured default_class. Messages are parsed as the intake parses them at DATA.
"""

from __future__ import annotations

import pytest

from relay import headers as hdr
from relay.config import Config, from_dict
from relay.intake.classes import ClassError, Resolution, message_tags, resolve

DEFAULT = Config()  # transactional (set tx), list (set list), bulk (set bulk); default transactional
NAMES = "bulk, list, transactional"
# Neither "list" nor "bulk" configured, and another default: rule 5 has nothing to pick.
NO_LIST = from_dict(
    {
        "default_class": "notify",
        "classes": {"notify": {"configuration_set": "notify-set"}, "promo": {"configuration_set": "promo"}},
    }
)


def message(*headers: str) -> bytes:
    return ("".join(h + "\r\n" for h in ("From: app@example.com", *headers)) + "\r\nbody\r\n").encode()


def resolved(
    data: bytes, config: Config = DEFAULT, *, user: str | None = None, listener: str | None = None
) -> Resolution:
    return resolve(hdr.Headers.of(data), config, user_class=user, listener_class=listener)


@pytest.mark.parametrize(
    ("headers", "user", "listener", "expected"),
    [
        # 6. nothing else matches: the configured default
        ((), None, None, ("transactional", "default")),
        (("Precedence: list",), None, None, ("transactional", "default")),
        (("Precedence: junk",), None, None, ("transactional", "default")),
        # 5. list headers
        (("List-Id: <news.example.com>",), None, None, ("list", "list-headers")),
        (("List-Unsubscribe: <mailto:u@example.com>",), None, None, ("list", "list-headers")),
        (("Precedence: bulk",), None, None, ("bulk", "list-headers")),
        (("Precedence:  BULK ",), None, None, ("bulk", "list-headers")),
        (("Precedence: bulk", "List-Id: <n.example.com>"), None, None, ("list", "list-headers")),
        # 4. the listener's default class beats list headers
        (("List-Id: <n.example.com>",), None, "bulk", ("bulk", "listener")),
        ((), None, "list", ("list", "listener")),
        # 3. the user's default class beats the listener's and list headers
        ((), "bulk", "list", ("bulk", "user")),
        (("Precedence: bulk",), "transactional", None, ("transactional", "user")),
        # 2. X-SES-CONFIGURATION-SET naming a class's set beats user and listener
        (("X-SES-CONFIGURATION-SET: bulk",), "list", "list", ("bulk", "configuration-set")),
        (("X-SES-CONFIGURATION-SET:  tx ",), None, None, ("transactional", "configuration-set")),
        (("X-SES-Configuration-Set: list", "Precedence: bulk"), None, None, ("list", "configuration-set")),
        # 1. X-Message-Class beats everything (any case, surrounding space ignored)
        (("X-Message-Class: bulk", "X-SES-CONFIGURATION-SET: tx"), "list", "list", ("bulk", "header")),
        (("X-Message-Class:  List ",), None, None, ("list", "header")),
        (("x-message-class: BULK", "List-Id: <n.example.com>"), None, None, ("bulk", "header")),
    ],
)
def test_resolve_picks_the_first_rule_that_matches(
    headers: tuple[str, ...], user: str | None, listener: str | None, expected: tuple[str, str]
) -> None:
    assert resolved(message(*headers), user=user, listener=listener) == Resolution(*expected)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # without a "list" or "bulk" class, list headers fall through to the default
        (("List-Id: <n.example.com>",), ("notify", "default")),
        (("Precedence: bulk",), ("notify", "default")),
        (("X-SES-CONFIGURATION-SET: promo",), ("promo", "configuration-set")),
        (("X-Message-Class: promo",), ("promo", "header")),
    ],
)
def test_resolve_uses_the_configured_classes_and_default(
    headers: tuple[str, ...], expected: tuple[str, str]
) -> None:
    assert resolved(message(*headers), NO_LIST) == Resolution(*expected)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (("X-Message-Class: promo",), f"unknown X-Message-Class 'promo'; configured classes: {NAMES}"),
        (("X-Message-Class: ",), f"unknown X-Message-Class ''; configured classes: {NAMES}"),
        # an explicit class is refused even when a later rule would have matched
        (
            ("X-Message-Class: nope", "X-SES-CONFIGURATION-SET: tx"),
            f"unknown X-Message-Class 'nope'; configured classes: {NAMES}",
        ),
        (
            ("X-SES-CONFIGURATION-SET: marketing",),
            f"X-SES-CONFIGURATION-SET 'marketing' is not the set of any configured class ({NAMES})",
        ),
        # a class name is not a configuration set: "transactional"'s set is "tx"
        (
            ("X-SES-CONFIGURATION-SET: transactional",),
            f"X-SES-CONFIGURATION-SET 'transactional' is not the set of any configured class ({NAMES})",
        ),
    ],
)
def test_explicit_headers_naming_nothing_configured_are_refused(headers: tuple[str, ...], why: str) -> None:
    with pytest.raises(ClassError) as refused:
        resolved(message(*headers), user="bulk", listener="list")
    assert str(refused.value) == why


@pytest.mark.parametrize(
    ("headers", "tags"),
    [
        ((), ()),
        (("X-SES-MESSAGE-TAGS: campaign=spring, team=growth",), (("campaign", "spring"), ("team", "growth"))),
        (("X-SES-MESSAGE-TAGS: a=1", "X-SES-MESSAGE-TAGS: b=2,, "), (("a", "1"), ("b", "2"))),
        (("X-SES-MESSAGE-TAGS: a=1, a=2",), (("a", "2"),)),  # the last value of a name wins
    ],
)
def test_message_tags(headers: tuple[str, ...], tags: tuple[tuple[str, str], ...]) -> None:
    assert message_tags(hdr.Headers.of(message(*headers))) == tags


NOT_NAME_VALUE = "is not name=value with letters, digits, '_' or '-'"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("campaign", f"X-SES-MESSAGE-TAGS entry 'campaign' {NOT_NAME_VALUE}"),
        ("campaign=spring sale", f"X-SES-MESSAGE-TAGS entry 'campaign=spring sale' {NOT_NAME_VALUE}"),
        ("=x", f"X-SES-MESSAGE-TAGS entry '=x' {NOT_NAME_VALUE}"),
        ("message-class=bulk", "X-SES-MESSAGE-TAGS may not set the reserved tag 'message-class'"),
        ("Submission-ID=x", "X-SES-MESSAGE-TAGS may not set the reserved tag 'Submission-ID'"),
        ("ses:caller-identity=x", f"X-SES-MESSAGE-TAGS entry 'ses:caller-identity=x' {NOT_NAME_VALUE}"),
        (", ".join(f"t{i}=v" for i in range(49)), "X-SES-MESSAGE-TAGS has more than 48 tags"),
    ],
)
def test_bad_message_tags_are_refused_with_the_reason(value: str, why: str) -> None:
    with pytest.raises(ClassError) as refused:
        message_tags(hdr.Headers.of(message(f"X-SES-MESSAGE-TAGS: {value}")))
    assert str(refused.value) == why
