"""Resolving a message's class (pure): the first rule that matches wins.

1. X-Message-Class; 2. X-SES-CONFIGURATION-SET naming a configured class's set;
3. the authenticated user's default class; 4. the listener's default class;
5. List-Id / List-Unsubscribe -> list, Precedence: bulk -> bulk; 6. default_class.

Explicit headers that name nothing we know are refused rather than ignored:
sending bulk mail down the transactional path would spend that class's reputation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.config import Config
from relay.headers import Headers
from relay.vocabulary import Tag

_TAG_PART = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
RESERVED_TAGS = frozenset(Tag)  # the sender sets these itself


class ClassError(ValueError):
    """The message asks for a class or tags we cannot honour; the text is the SMTP reply's."""


@dataclass(frozen=True)
class Resolution:
    klass: str
    source: str  # which rule decided: header, configuration-set, user, listener, list-headers, default


def resolve(
    headers: Headers, config: Config, *, user_class: str | None = None, listener_class: str | None = None
) -> Resolution:
    names = ", ".join(sorted(config.classes))
    explicit = headers.first("X-Message-Class")
    if explicit is not None:
        klass = explicit.strip().lower()
        if klass not in config.classes:
            raise ClassError(f"unknown X-Message-Class {explicit!r}; configured classes: {names}")
        return Resolution(klass, "header")
    config_set = headers.first("X-SES-CONFIGURATION-SET")
    if config_set is not None:
        klass = config.class_for_configuration_set(config_set.strip())
        if klass is None:
            raise ClassError(
                f"X-SES-CONFIGURATION-SET {config_set!r} is not the set of any configured class ({names})"
            )
        return Resolution(klass, "configuration-set")
    if user_class is not None:
        return Resolution(user_class, "user")
    if listener_class is not None:
        return Resolution(listener_class, "listener")
    is_list = headers.has("List-Id") or headers.has("List-Unsubscribe")
    if "list" in config.classes and is_list:
        return Resolution("list", "list-headers")
    precedence = (headers.first("Precedence") or "").strip().lower()
    if "bulk" in config.classes and precedence == "bulk":
        return Resolution("bulk", "list-headers")
    return Resolution(config.default_class, "default")


def message_tags(headers: Headers) -> tuple[tuple[str, str], ...]:
    """X-SES-MESSAGE-TAGS ("name=value, name2=value2") as SES's SMTP interface reads it.

    Names and values are limited to what SES accepts, so a bad tag fails here with a
    clear reply instead of later as an SES rejection.
    """
    tags: dict[str, str] = {}
    for value in headers.all("X-SES-MESSAGE-TAGS"):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, tag_value = part.partition("=")
            name, tag_value = name.strip(), tag_value.strip()
            if not sep or not _TAG_PART.match(name) or not _TAG_PART.match(tag_value):
                raise ClassError(
                    f"X-SES-MESSAGE-TAGS entry {part!r} is not name=value with letters, digits, '_' or '-'"
                )
            if name.lower() in RESERVED_TAGS or name.lower().startswith("ses:"):
                raise ClassError(f"X-SES-MESSAGE-TAGS may not set the reserved tag {name!r}")
            tags[name] = tag_value
    if len(tags) > 48:
        raise ClassError("X-SES-MESSAGE-TAGS has more than 48 tags")
    return tuple(tags.items())
