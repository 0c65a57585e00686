"""X-SES-*-ARN headers: a user allowed to set them sends through those identities; nobody else can."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_ses import FakeSes
from tests.support.samples import arn_message
from tests.support.security import PASSWORD, add_user, make_cert, tls_client


@pytest.mark.parametrize(("may_set_arns", "expected"), [(True, "111111111111"), (False, None)])
def test_arn_headers_are_used_only_for_users_allowed_to_set_them(
    relay_factory, tmp_path: Path, may_set_arns: bool, expected: str | None
) -> None:
    cert = make_cert(tmp_path / "tls")
    data = tmp_path / "data"
    data.mkdir()
    add_user(data, "alice", "@example.com", may_set_arns=may_set_arns)
    with FakeSes() as fake:
        config = (
            f'[ses]\nendpoint_url = "{fake.url}"\nmax_send_rate = 100.0\n'
            '[[listeners]]\ntls = "starttls"\nrequire_auth = true\n' + cert.toml()
        )
        relay = relay_factory(config)
        with tls_client(relay, cert) as client:
            client.login("alice", PASSWORD)
            client.sendmail("app@example.com", ["r@example.org"], arn_message())
        [call] = fake.wait_for_calls(1, timeout=20)
    if expected is None:
        assert call.source_arn is None and call.from_arn is None
    else:
        assert expected in (call.source_arn or "") and expected in (call.from_arn or "")
    assert b"X-SES-SOURCE-ARN" not in call.raw and b"X-SES-FROM-ARN" not in call.raw
