"""DKIM: real keys on disk, real signatures, verified by dkimpy against the DNS record keygen prints."""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization

from relay.sending.dkim import DkimError, DkimKeys, KeyInfo, key_info, keygen, split_txt
from relay.sending.dkim_sign import NEVER_SIGNED, headers_to_sign, sign
from tests.support.samples import DKIM_MESSAGE


def dns_for(*keys: KeyInfo) -> Callable[..., bytes | None]:
    """A resolver answering exactly the TXT records keygen told us to publish."""
    records = {f"{k.record_name}.".encode(): "".join(k.dns_strings()).encode() for k in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> KeyInfo:
    return keygen(tmp_path_factory.mktemp("data"), "example.com", "s1")


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    match = re.search(r"^DKIM-Signature:(.*?)(?=^\S)", header + "\r\nEnd:", re.S | re.M)
    assert match, "no DKIM-Signature header"
    value = re.sub(r"\s+", "", match.group(1))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


# --- keygen ----------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_the_owner_can_read(tmp_path: Path) -> None:
    info = keygen(tmp_path, "Example.COM.", "S1", bits=1024)
    assert info.path == tmp_path / "dkim" / "example.com.s1.pem"
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert info.path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert (info.domain, info.selector) == ("example.com", "s1")


def test_keygen_record_publishes_the_keys_public_half(key: KeyInfo) -> None:
    assert key.record_name == "s1._domainkey.example.com"
    assert key.record_value.startswith("v=DKIM1; k=rsa; p=")
    private = serialization.load_pem_private_key(key.path.read_bytes(), password=None)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.record_value.split("p=", 1)[1] == base64.b64encode(spki).decode()
    assert private.key_size == 2048  # type: ignore[union-attr]


def test_dns_strings_are_at_most_255_bytes_and_join_back(key: KeyInfo) -> None:
    parts = key.dns_strings()
    assert len(parts) == 2  # a 2048-bit record does not fit one character-string
    assert all(1 <= len(p) <= 255 for p in parts)
    assert "".join(parts) == key.record_value
    assert key.zone_line().startswith('s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=')
    assert split_txt("") == [""]
    assert split_txt("abcdef", 4) == ["abcd", "ef"]
    with pytest.raises(ValueError):
        split_txt("abc", 256)


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = keygen(tmp_path, "example.com", "s1", bits=1024)
    before = first.path.read_bytes()
    with pytest.raises(FileExistsError, match=r"example\.com.*s1"):
        keygen(tmp_path, "example.com", "s1", bits=1024)
    assert first.path.read_bytes() == before
    second = keygen(tmp_path, "example.com", "s1", bits=1024, force=True)
    assert second.path.read_bytes() != before
    assert second.record_value != first.record_value
    assert stat.S_IMODE(second.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "dkim").iterdir()) == ["example.com.s1.pem"]  # no temp left


@pytest.mark.parametrize(
    ("domain", "selector", "bits"),
    [
        ("localhost", "s1", 2048),
        ("exa mple.com", "s1", 2048),
        ("../etc.com", "s1", 2048),
        ("example.com", "s1/x", 2048),
        ("example.com", "s1.2024", 2048),
        ("example.com", "", 2048),
        ("example.com", "s1", 512),
    ],
)
def test_keygen_refuses_bad_names_and_weak_keys(
    tmp_path: Path, domain: str, selector: str, bits: int
) -> None:
    with pytest.raises(ValueError):
        keygen(tmp_path, domain, selector, bits=bits)
    assert not (tmp_path / "dkim").exists() or not any((tmp_path / "dkim").iterdir())


def test_key_info_rebuilds_the_record_for_an_existing_key(key: KeyInfo) -> None:
    assert key_info(key.path, "example.com", "s1") == key


# --- signing ---------------------------------------------------------------------


def test_signed_message_verifies_against_the_published_record(key: KeyInfo) -> None:
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    assert signed.endswith(DKIM_MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    assert dkimpy.verify(signed, dnsfunc=dns_for(key))
    tags = signature_tags(signed)
    assert (tags["d"], tags["s"]) == ("example.com", "s1")
    assert (tags["c"], tags["a"]) == ("relaxed/relaxed", "rsa-sha256")


def test_signed_headers_are_the_listed_ones_with_from_oversigned(key: KeyInfo) -> None:
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    signed_names = signature_tags(signed)["h"].split(":")
    assert signed_names == [
        "from",
        "to",
        "cc",
        "subject",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "from",
    ]
    assert not NEVER_SIGNED & set(signed_names)
    assert "x-mailer" not in signed_names


def test_what_ses_rewrites_does_not_break_the_signature(key: KeyInfo) -> None:
    """SES replaces Message-ID and Date and sets Return-Path; none of them is signed."""
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    rewritten = (
        signed.replace(b"Message-ID: <local-1@app.example.com>", b"Message-ID: <0100018c@amazonses.com>")
        .replace(b"Date: Mon, 01 Jan 2024 10:00:00 +0000", b"Date: Tue, 02 Jan 2024 11:11:11 +0000")
        .replace(b"Return-Path: <bounces@example.com>", b"Return-Path: <0100018c@amazonses.com>")
    )
    rewritten = b"Received: from a by b; Tue, 02 Jan 2024 11:11:11 +0000\r\n" + rewritten
    assert rewritten != signed
    assert dkimpy.verify(rewritten, dnsfunc=dns_for(key))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"the numbers are in.", b"the numbers are out."),  # body
        (b"Subject: Quarterly report", b"Subject: Quarterly rep0rt"),
        (b"To: Bob <bob@example.org>", b"To: Mallory <mallory@example.org>"),
        (b"List-Unsubscribe: <https://example.com/u/1>", b"List-Unsubscribe: <https://evil.example/u/1>"),
    ],
)
def test_tampering_breaks_the_signature(key: KeyInfo, old: bytes, new: bytes) -> None:
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    assert old in signed
    assert not dkimpy.verify(signed.replace(old, new), dnsfunc=dns_for(key))


def test_an_added_from_breaks_the_signature(key: KeyInfo) -> None:
    """Oversigning From: a second From slipped in above ours is caught."""
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    head, sep, rest = signed.partition(b"From: Alice")
    forged = head + b"From: Mallory <ceo@example.com>\r\n" + sep + rest
    assert not dkimpy.verify(forged, dnsfunc=dns_for(key))


def test_wrong_published_key_fails(key: KeyInfo, tmp_path: Path) -> None:
    other = keygen(tmp_path, "example.com", "s1", bits=1024)
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    assert not dkimpy.verify(signed, dnsfunc=dns_for(other))


def test_lf_only_messages_get_an_lf_signature_and_verify(key: KeyInfo) -> None:
    message = DKIM_MESSAGE.replace(b"\r\n", b"\n")
    signed = sign(message, "example.com", "s1", key.path.read_bytes())
    assert b"\r" not in signed
    assert dkimpy.verify(signed, dnsfunc=dns_for(key))


def test_relaxed_canonicalisation_survives_whitespace_changes(key: KeyInfo) -> None:
    signed = sign(DKIM_MESSAGE, "example.com", "s1", key.path.read_bytes())
    loosened = signed.replace(b"Subject: Quarterly report", b"Subject:   Quarterly    report  ")
    loosened = loosened.replace(b"Hello Bob,\r\n", b"Hello   Bob,   \r\n")
    assert dkimpy.verify(loosened, dnsfunc=dns_for(key))


def test_our_signature_is_byte_identical_to_plain_dkimpy(key: KeyInfo) -> None:
    """The OpenSSL shortcut changes the speed, not the result (PKCS#1 v1.5 is deterministic)."""
    pem = key.path.read_bytes()
    for _ in range(3):  # t= is the current second; retry if the two calls straddle one
        ours = sign(DKIM_MESSAGE, "example.com", "s1", pem)
        theirs = dkimpy.sign(
            DKIM_MESSAGE,
            b"s1",
            b"example.com",
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers_to_sign(DKIM_MESSAGE),
        )
        if signature_tags(ours)["t"] == signature_tags(theirs + DKIM_MESSAGE)["t"]:
            assert ours == theirs + DKIM_MESSAGE
            return
    pytest.fail("could not sign twice within one second")


def test_message_without_from_is_refused(key: KeyInfo) -> None:
    with pytest.raises(DkimError, match="no From"):
        sign(b"To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n", "example.com", "s1", key.path.read_bytes())


# --- DkimKeys ---------------------------------------------------------------------


def test_keys_made_by_keygen_are_found_without_config(tmp_path: Path) -> None:
    a = keygen(tmp_path, "example.com", "s1", bits=1024)
    b = keygen(tmp_path, "mail.example.org", "2024q1", bits=1024)
    keys = DkimKeys({}, tmp_path)
    assert keys.domains == ["example.com", "mail.example.org"]
    assert keys.for_domain("EXAMPLE.com") == ("s1", a.path.read_bytes())
    assert keys.for_domain("mail.example.org") == ("2024q1", b.path.read_bytes())
    assert keys.for_domain("example.org") is None  # no parent/child guessing
    assert keys.for_domain("not a domain") is None


def test_found_key_signs_a_verifiable_message(tmp_path: Path) -> None:
    info = keygen(tmp_path, "example.com", "s1", bits=1024)
    selector, pem = DkimKeys(None, tmp_path).for_domain("example.com")  # type: ignore[misc]
    assert dkimpy.verify(sign(DKIM_MESSAGE, "example.com", selector, pem), dnsfunc=dns_for(info))


def test_configured_key_wins_over_the_data_dir(tmp_path: Path) -> None:
    keygen(tmp_path, "example.com", "s1", bits=1024)
    elsewhere = keygen(tmp_path / "etc", "example.com", "ops", bits=1024)
    keys = DkimKeys({"example.com": ("ops", elsewhere.path)}, tmp_path)
    assert keys.for_domain("example.com") == ("ops", elsewhere.path.read_bytes())


def test_missing_configured_key_file_names_domain_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "example.com.pem"
    with pytest.raises(DkimError) as info:
        DkimKeys({"example.com": ("s1", missing)}, tmp_path)
    assert "example.com" in str(info.value)
    assert str(missing) in str(info.value)


def test_unreadable_configured_key_file_is_refused_at_construction(tmp_path: Path) -> None:
    a_directory = tmp_path / "key.pem"
    a_directory.mkdir()
    with pytest.raises(DkimError, match=r"example\.net.*key\.pem"):
        DkimKeys({"example.net": ("s1", a_directory)}, tmp_path)
    if os.geteuid() != 0:  # root reads anything; the directory case covers it there
        locked = tmp_path / "locked.pem"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(DkimError, match=r"locked\.pem"):
            DkimKeys({"example.net": ("s1", locked)}, tmp_path)


def test_two_keys_for_one_domain_must_be_chosen_in_config(tmp_path: Path) -> None:
    keygen(tmp_path, "example.com", "s1", bits=1024)
    s2 = keygen(tmp_path, "example.com", "s2", bits=1024)
    with pytest.raises(DkimError, match=r"several DKIM keys for example\.com"):
        DkimKeys({}, tmp_path)
    keys = DkimKeys({"example.com": ("s2", None)}, tmp_path)  # selector only: file from the data dir
    assert keys.for_domain("example.com") == ("s2", s2.path.read_bytes())


def test_selector_only_config_needs_the_file_in_the_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DkimError, match=r"example\.com\.s9\.pem"):
        DkimKeys({"example.com": ("s9", None)}, tmp_path)
    with pytest.raises(DkimError, match="no key_file"):
        DkimKeys({"example.com": ("s9", None)}, None)


def test_bad_config_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DkimError, match=r"dkim\.bad domain"):
        DkimKeys({"bad domain": ("s1", tmp_path / "x.pem")}, tmp_path)


def test_stray_files_in_the_dkim_dir_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "dkim").mkdir()
    (tmp_path / "dkim" / "README.pem").write_text("not a key")
    (tmp_path / "dkim" / "notes.txt").write_text("hello")
    assert DkimKeys({}, tmp_path).domains == []
    assert DkimKeys({}, tmp_path / "absent").domains == []


def test_keys_are_read_once_and_cached(tmp_path: Path) -> None:
    info = keygen(tmp_path, "example.com", "s1", bits=1024)
    keys = DkimKeys({}, tmp_path)
    first = keys.for_domain("example.com")
    info.path.unlink()
    assert keys.for_domain("example.com") == first


def test_a_discovered_key_removed_before_first_use_is_a_dkim_error(tmp_path: Path) -> None:
    info = keygen(tmp_path, "example.com", "s1", bits=1024)
    keys = DkimKeys({}, tmp_path)
    info.path.unlink()
    with pytest.raises(DkimError, match=r"example\.com"):
        keys.for_domain("example.com")


# --- the start-time check: the shape of each key file, without cryptography ------------------


def _ec_key(fmt: serialization.PrivateFormat) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    )


def _encrypted_key() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: b"", "does not hold a PEM private key"),
        (lambda: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not hold a PEM"),
        (lambda: b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", "does not hold a PEM"),  # cut short
        (
            lambda: b"-----BEGIN RSA PRIVATE KEY-----\nMII\n-----END RSA PRIVATE KEY-----\n",
            "not valid base64",
        ),
        (lambda: _ec_key(serialization.PrivateFormat.TraditionalOpenSSL), "EC key"),
        (lambda: _ec_key(serialization.PrivateFormat.PKCS8), "not RSA"),
        (_encrypted_key, "encrypted"),
    ],
    ids=["empty", "certificate", "truncated", "bad-base64", "ec", "ec-pkcs8", "encrypted"],
)
def test_a_key_file_that_is_no_rsa_key_stops_the_start(
    tmp_path: Path, content: Callable[[], bytes], problem: str
) -> None:
    path = tmp_path / "example.com.pem"
    path.write_bytes(content())
    with pytest.raises(DkimError) as info:
        DkimKeys({"example.com": ("s1", path)}, tmp_path)
    assert problem in str(info.value)
    assert "example.com" in str(info.value) and str(path) in str(info.value)


def test_found_keys_are_checked_too(tmp_path: Path) -> None:
    keygen(tmp_path, "example.com", "s1", bits=1024)
    assert DkimKeys({}, tmp_path).has_keys
    (tmp_path / "dkim" / "example.org.s1.pem").write_bytes(b"oops")
    with pytest.raises(DkimError, match=r"example\.org.*does not hold a PEM private key"):
        DkimKeys({}, tmp_path)
    assert not DkimKeys({}, tmp_path / "elsewhere").has_keys


def test_pkcs8_and_pkcs1_rsa_keys_pass_and_load(tmp_path: Path) -> None:
    from relay.sending.dkim_sign import load_keys

    info = keygen(tmp_path, "example.com", "s1", bits=1024)  # PKCS#1
    key = serialization.load_pem_private_key(info.path.read_bytes(), password=None)
    pkcs8 = tmp_path / "pkcs8.pem"
    pkcs8.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    keys = DkimKeys({"example.net": ("s1", pkcs8)}, tmp_path)
    load_keys(keys)
    assert keys.domains == ["example.com", "example.net"]


def test_a_key_of_the_right_shape_that_openssl_refuses_stops_the_worker(tmp_path: Path) -> None:
    from relay.sending.dkim_sign import load_keys

    body = base64.encodebytes(bytes.fromhex("3082000a020100") + b"\x00" * 40)
    path = tmp_path / "k.pem"
    path.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\n" + body + b"-----END RSA PRIVATE KEY-----\n")
    keys = DkimKeys({"example.com": ("s1", path)}, tmp_path)  # the shape is right
    with pytest.raises(DkimError, match=r"example\.com.*cannot be loaded"):
        load_keys(keys)
