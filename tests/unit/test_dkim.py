"""DKIM signing refuses a key it cannot use, naming the domain (no key on disk needed)."""

from __future__ import annotations

import pytest

from relay.sending.dkim import DkimError
from relay.sending.dkim_sign import sign
from tests.support.samples import DKIM_MESSAGE


@pytest.mark.parametrize(
    "bad_key",
    [b"", b"not a key", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"],
)
def test_unusable_key_is_a_dkim_error(bad_key: bytes) -> None:
    with pytest.raises(DkimError, match=r"example\.com"):
        sign(DKIM_MESSAGE, "example.com", "s1", bad_key)
