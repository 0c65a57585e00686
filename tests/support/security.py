"""Helpers for the access-control tests: a throwaway CA-less certificate, users, TLS clients."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Relay

# Distinctive, so a grep of the logs cannot match anything else by chance.
PASSWORD = "Tr0ub4dor&3-correct-horse-battery"
WRONG = "not-the-password-7781"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def toml(self) -> str:
        return f'[tls]\ncert_file = "{self.cert}"\nkey_file = "{self.key}"\n'


def make_cert(directory: Path) -> Cert:
    """A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ses-relay test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return Cert(cert_path, key_path)


def add_user(
    data_dir: Path,
    name: str,
    *senders: str,
    password: str = PASSWORD,
    default_class: str | None = None,
    rate: int = 0,
    may_set_arns: bool = False,
) -> None:
    """Write a user into <data-dir>/users.json in-process (the CLI path has its own test)."""
    from relay.intake.users import User, editing, hash_password, normalise_sender_rule

    with editing(data_dir / "users.json") as users:
        rules = tuple(normalise_sender_rule(s) for s in senders)
        users.users[name] = User(name, hash_password(password), rules, default_class, rate, may_set_arns)


def tls_client(relay: Relay, cert: Cert, *, source: str | None = None) -> smtplib.SMTP:
    """Connected, EHLO'd, STARTTLS'd and EHLO'd again."""
    client = smtplib.SMTP("127.0.0.1", relay.port, timeout=30, source_address=(source, 0) if source else None)
    client.ehlo("client.example.com")
    code, _ = client.starttls(context=cert.client_context())
    assert code == 220
    client.ehlo("client.example.com")
    return client


def plain_blob(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def secrets_in(text: str, password: str = PASSWORD) -> list[str]:
    """Which forms of the password (plain, base64 alone, inside a PLAIN blob) appear in `text`."""
    forms = {
        "plain": password,
        "base64": base64.b64encode(password.encode()).decode(),
        "plain-blob": plain_blob("alice", password),
    }
    return [name for name, form in forms.items() if form in text]
