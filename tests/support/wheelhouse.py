"""Wheels of the distributions installed here, made again from their installed files.

`ses-relay lambda package --wheels DIR` installs the function's dependencies from a
folder of wheels with pip's index turned off. The tests give it one made from this
virtualenv, so that building the zip reaches no network: every installed
distribution keeps its files, its dist-info (WHEEL with the tags it was built for,
METADATA) and a RECORD, which is all a wheel is.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path, PurePosixPath

# The Lambda function's dependencies and theirs (relay/ops/lambda_package.py PINNED, UNPINNED).
LAMBDA_DISTRIBUTIONS = (
    "psycopg", "psycopg-binary", "psycopg-pool", "pydantic", "pydantic-core", "annotated-types",
    "typing-extensions", "typing-inspection", "orjson", "tzdata",
)  # fmt: skip
_NOT_IN_A_WHEEL = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _tags(wheel_file: str) -> str:
    """The compressed tag set of a WHEEL file, e.g. `py2.py3-none-any`."""
    lines = wheel_file.splitlines()
    tags = [line.split(":", 1)[1].strip().split("-") for line in lines if line.startswith("Tag:")]
    return "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack(name: str, dest: Path) -> Path:
    """A wheel of the installed distribution `name` in `dest`; its path."""
    dist = importlib.metadata.distribution(name)
    files = [PurePosixPath(str(f)) for f in dist.files or ()]
    [info] = {f.parts[0] for f in files if f.parts[0].endswith(".dist-info")}
    kept = [
        f for f in files
        if f.parts[0] != ".." and "__pycache__" not in f.parts and f.name not in _NOT_IN_A_WHEEL
    ]  # fmt: skip
    root = Path(str(dist.locate_file("")))
    wheel_file = (root / info / "WHEEL").read_text()
    out = dest / f"{info.removesuffix('.dist-info')}-{_tags(wheel_file)}.whl"
    record = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(kept):
            data = (root / f).read_bytes()
            zf.writestr(str(f), data)
            record.append(_record_line(str(f), data))
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out


def wheelhouse(dest: Path, names: tuple[str, ...] = LAMBDA_DISTRIBUTIONS) -> Path:
    """`dest` filled with a wheel of each of `names`, as installed here."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        repack(name, dest)
    return dest
