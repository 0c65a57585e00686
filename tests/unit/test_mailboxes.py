"""Notice routes: parsing the route table (hostile input included) and choosing a domain's route."""

from __future__ import annotations

import pytest

from feedback.notices.mailboxes import Route, parse_route, parse_routes, route_for

# --- route parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("maildir", Route(kind="maildir")),
        ("  MAILDIR ", Route(kind="maildir")),
        ("maildir:/var/mail/notices/{address}", Route(kind="maildir", target="/var/mail/notices/{address}")),
        ("maildir:/srv/{domain}/{local}", Route(kind="maildir", target="/srv/{domain}/{local}")),
        ("lmtp://127.0.0.1:24", Route(kind="lmtp", target="127.0.0.1", port=24)),
        ("lmtp://mail.example.com", Route(kind="lmtp", target="mail.example.com", port=24)),
        ("LMTP://[::1]:2424", Route(kind="lmtp", target="::1", port=2424)),
        ("lmtp:///run/dovecot/lmtp", Route(kind="lmtp", target="/run/dovecot/lmtp")),
        ("smtp://mx.example.com:2525", Route(kind="smtp", target="mx.example.com", port=2525)),
        ("smtp://mx.example.com", Route(kind="smtp", target="mx.example.com", port=25)),
        (
            "smtp://user:p%40ss@mx.example.com:587?starttls=1",
            Route(
                kind="smtp",
                target="mx.example.com",
                port=587,
                username="user",
                password="p@ss",
                starttls=True,
            ),
        ),
        (
            "smtp://mx.example.com:587?starttls=true&cafile=/etc/ca.pem",
            Route(kind="smtp", target="mx.example.com", port=587, starttls=True, cafile="/etc/ca.pem"),
        ),
        (
            "smtp://u:p@127.0.0.1:25",
            Route(kind="smtp", target="127.0.0.1", port=25, username="u", password="p"),
        ),
        ("smtp://mx.example.com:25?starttls=0", Route(kind="smtp", target="mx.example.com", port=25)),
        ("ses", Route(kind="ses")),
        ("SES", Route(kind="ses")),
    ],
)
def test_parse_route(text: str, route: Route) -> None:
    assert parse_route(text) == route


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty notice route"),
        ("mbox", "unknown notice route"),
        ("http://example.com", "unknown notice route"),
        ("ses:eu-west-1", "unknown notice route"),
        ("maildir:", "empty Maildir path"),
        ("maildir:/srv/{user}", "unknown placeholder"),
        ("maildir:/srv/{address!r}", "unknown placeholder"),
        ("maildir:/srv/{address:>10}", "unknown placeholder"),
        ("maildir:/srv/{address", "Maildir path template"),
        ("lmtp://", "missing host"),
        ("lmtp://host:notaport", "port must be a number"),
        ("lmtp://host:70000", "port must be a number"),
        ("lmtp://host:0", "port must be a number"),
        ("lmtp://u:p@host:24", "lmtp routes take no user"),
        ("lmtp://host:24?starttls=1", "lmtp routes take no user or options"),
        ("lmtp:///run/sock?x=1", "unix socket route takes no"),
        ("smtp://host:25/path", "unexpected path"),
        ("smtp://host:25#frag", "fragment"),
        ("smtp://host:25?starttls=maybe", "starttls must be 1 or 0"),
        ("smtp://host:25?tls=1", "unknown option 'tls'"),
        ("smtp://:pw@host:25?starttls=1", "empty user name"),
        ("smtp://user:pw@mx.example.com:25", "refusing to send a password without TLS"),
    ],
)
def test_parse_route_refuses_bad_input(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_route(text)


def test_refused_plaintext_password_is_not_echoed() -> None:
    with pytest.raises(ValueError) as caught:
        parse_route("smtp://user:hunter2@mx.example.com:25")
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(parse_route("smtp://user:hunter2@mx.example.com:25?starttls=1"))


def test_route_for_prefers_the_exact_domain_then_parents_then_default() -> None:
    routes = {
        "example.com": "lmtp://10.0.0.1:24",
        "Eu.Example.com.": "smtp://10.0.0.2:25",
        "other.org": "ses",
    }
    assert route_for("a@example.com", routes, "maildir") == Route(kind="lmtp", target="10.0.0.1", port=24)
    assert route_for("a@shop.example.com", routes, "maildir") == Route(
        kind="lmtp", target="10.0.0.1", port=24
    )
    assert route_for("a@eu.example.com", routes, "maildir") == Route(kind="smtp", target="10.0.0.2", port=25)
    assert route_for("a@x.EU.example.COM", routes, "maildir") == Route(
        kind="smtp", target="10.0.0.2", port=25
    )
    assert route_for("<a@other.org>", routes, "maildir") == Route(kind="ses")
    assert route_for("a@notexample.com", routes, "maildir") == Route(kind="maildir")
    assert route_for("a@example.net", {}, "maildir:/srv/{address}") == Route(
        kind="maildir", target="/srv/{address}"
    )
    assert route_for("", routes, "maildir") == Route(kind="maildir")
    with pytest.raises(ValueError, match="unknown notice route"):
        route_for("a@example.net", routes, "pigeon")


def test_parse_routes_names_the_bad_key() -> None:
    assert parse_routes({"Example.COM": "ses"}) == {"example.com": Route(kind="ses")}
    with pytest.raises(ValueError, match=r"notices route for 'bad.example': unknown notice route 'pigeon'"):
        parse_routes({"ok.example": "maildir", "bad.example": "pigeon"})
    with pytest.raises(ValueError, match="is not a domain"):
        parse_routes({" . ": "maildir"})
