"""SMTP users: the users file, password hashes and per-user sender rules.

The file is JSON so that it can be read and written with the standard library and
diffed by an admin; it holds only scrypt hashes, never a password, and is written
atomically with mode 0600 (a half-written users file would lock every client out,
a world-readable one would hand out hashes to crack offline).

    {"version": 1,
     "users": {"app": {"password": "scrypt$16384$8$1$<salt b64>$<hash b64>",
                       "senders": ["app@example.com", "@example.org"],
                       "default_class": "transactional",
                       "rate_per_minute": 120,
                       "may_set_arns": false}}}

`senders` entries are exact addresses, `@domain` for any address at that domain,
or `*` for any sender; a user with no entries may not send at all (default deny).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.addresses import AddressError, normalise

FILE_VERSION = 1
ANY_SENDER = "*"
DEFAULT_USERS_FILE = "users.json"

# ~16 MB and ~50 ms a check on the development machine: slow for an attacker with
# a stolen file, cheap enough for a login (it runs off the event loop).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD = 1024
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024  # refuse hashes that would need more to check

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class UsersFileError(ValueError):
    """The users file or a user's settings cannot be used; the message says which and why."""


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    senders: tuple[str, ...] = ()
    default_class: str | None = None
    rate_per_minute: int = 0  # 0 = no per-user limit
    may_set_arns: bool = False  # honour client-supplied X-SES-*-ARN headers

    def __repr__(self) -> str:  # keeps the hash out of tracebacks and debug logs
        return f"User(name={self.name!r}, senders={self.senders!r})"

    def may_send_as(self, address: str) -> bool:
        """Is the normalised `address` one of this user's permitted senders?"""
        return sender_permitted(self.senders, address)


@dataclass
class UsersFile:
    """All users, as read from disk (or about to be written)."""

    users: dict[str, User] = field(default_factory=dict)


def check_name(name: str) -> str:
    if not _NAME_OK.match(name):
        raise UsersFileError(
            f"user name {name!r} must be 1-128 letters, digits or . _ @ + - (starting with a letter or digit)"
        )
    return name


def normalise_sender_rule(rule: str) -> str:
    """`*`, `@domain` or an address, in the form the relay compares against."""
    text = rule.strip()
    if text == ANY_SENDER:
        return ANY_SENDER
    if text.startswith("@"):
        try:
            return "@" + normalise(f"x{text}").rpartition("@")[2]
        except AddressError as exc:
            raise UsersFileError(f"sender rule {rule!r}: {exc.why}") from None
    try:
        return normalise(text)
    except AddressError as exc:
        raise UsersFileError(f"sender rule {rule!r}: {exc.why}") from None


def sender_permitted(rules: tuple[str, ...], address: str) -> bool:
    """Exact address, or its domain as `@domain`, or `*`; `address` is already normalised."""
    if ANY_SENDER in rules:
        return True
    return address in rules or ("@" + address.rpartition("@")[2]) in rules


# -- password hashes -----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$N$r$p$salt$hash`, salt and hash in base64; parameters kept so they can be raised later."""
    if not password:
        raise UsersFileError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise UsersFileError(f"the password is longer than {MAX_PASSWORD} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=HASH_BYTES
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise UsersFileError("password hash is not in the form scrypt$N$r$p$salt$hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise UsersFileError("password hash has a malformed field") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * r * n > MAX_SCRYPT_MEMORY:
        raise UsersFileError("password hash has out-of-range scrypt parameters")
    if not digest or not salt:
        raise UsersFileError("password hash has an empty salt or hash")
    return n, r, p, salt, digest


def verify_password(password: bytes, stored: str) -> bool:
    """Constant-time comparison of scrypt(password) with the stored hash. CPU-heavy: run off the loop."""
    n, r, p, salt, digest = _parse_hash(stored)
    if len(password) > MAX_PASSWORD * 4:
        return False
    candidate = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


# A hash of a random password: unknown users are checked against it so that a login
# for a missing name takes as long as one with a wrong password.
_DUMMY_HASH: str | None = None


def dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


# -- the file ------------------------------------------------------------------------


def users_path(configured: str, data_dir: Path) -> Path:
    """[auth] users_file, else <data-dir>/users.json."""
    return Path(configured) if configured else data_dir / DEFAULT_USERS_FILE


def _user_from(name: str, raw: Any, classes: Mapping[str, Any] | None) -> User:
    where = f"user {name!r}"
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: expected an object")
    known = {"password", "senders", "default_class", "rate_per_minute", "may_set_arns"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UsersFileError(f"{where}: unknown key {unknown[0]!r}")
    password = raw.get("password")
    if not isinstance(password, str):
        raise UsersFileError(f"{where}: 'password' must be a scrypt hash string")
    try:
        _parse_hash(password)
    except UsersFileError as exc:
        raise UsersFileError(f"{where}: {exc}") from None
    senders = raw.get("senders", [])
    if not isinstance(senders, list) or not all(isinstance(s, str) for s in senders):
        raise UsersFileError(f"{where}: 'senders' must be a list of strings")
    try:
        rules = tuple(normalise_sender_rule(s) for s in senders)
    except UsersFileError as exc:
        raise UsersFileError(f"{where}: {exc}") from None
    klass = raw.get("default_class")
    if klass is not None and not isinstance(klass, str):
        raise UsersFileError(f"{where}: 'default_class' must be a string")
    if klass is not None and classes is not None and klass not in classes:
        raise UsersFileError(f"{where}: default_class {klass!r} is not a configured class")
    rate = raw.get("rate_per_minute", 0)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        raise UsersFileError(f"{where}: 'rate_per_minute' must be a whole number >= 0")
    arns = raw.get("may_set_arns", False)
    if not isinstance(arns, bool):
        raise UsersFileError(f"{where}: 'may_set_arns' must be true or false")
    return User(name, password, rules, klass, rate, arns)


def parse_users(text: str, classes: Mapping[str, Any] | None = None) -> UsersFile:
    """Validate a users file's text; `classes` (when given) checks each default_class."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsersFileError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users", {}), dict):
        raise UsersFileError('expected {"version": 1, "users": {NAME: {...}}}')
    if data.get("version", FILE_VERSION) != FILE_VERSION:
        raise UsersFileError(f"unsupported version {data.get('version')!r} (this relay reads {FILE_VERSION})")
    users: dict[str, User] = {}
    for name, raw in data.get("users", {}).items():
        check_name(name)
        users[name] = _user_from(name, raw, classes)
    return UsersFile(users)


def load_users(path: Path, classes: Mapping[str, Any] | None = None) -> UsersFile:
    """Read `path`; a missing file is an empty one (no users, every AUTH fails)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UsersFile()
    except OSError as exc:
        raise UsersFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_users(text, classes)
    except UsersFileError as exc:
        raise UsersFileError(f"{path}: {exc}") from None


def dump_users(users: UsersFile) -> str:
    out: dict[str, Any] = {}
    for name in sorted(users.users):
        u = users.users[name]
        entry: dict[str, Any] = {"password": u.password_hash, "senders": list(u.senders)}
        if u.default_class is not None:
            entry["default_class"] = u.default_class
        entry["rate_per_minute"] = u.rate_per_minute
        entry["may_set_arns"] = u.may_set_arns
        out[name] = entry
    return json.dumps({"version": FILE_VERSION, "users": out}, indent=2) + "\n"


def save_users(path: Path, users: UsersFile) -> None:
    """Write atomically (temp file, fsync, rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_users(users))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def editing(path: Path, classes: Mapping[str, Any] | None = None) -> Iterator[UsersFile]:
    """Load, let the caller change, save: under an exclusive lock so two admins cannot lose an edit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        users = load_users(path, classes)
        yield users
        save_users(path, users)
    finally:
        os.close(fd)
