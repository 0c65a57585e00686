"""`ses-relay lambda package`: the deployment zip of the feedback consumer as an AWS Lambda function.

The zip holds, at its root (the function's /var/task):
- `relay/` and `feedback/`, every module, as installed here. The handler imports a
  few dozen of them; all are shipped (under 1 MB) rather than a computed subset
  that one lazy import could make incomplete;
- the handler's third-party dependencies, installed by pip for the runtime's
  platform, at the versions installed here, so the function runs what the relays
  run: psycopg with psycopg-binary (libpq included) and psycopg-pool; pydantic
  (pydantic-core, annotated-types, typing-extensions, typing-inspection come with
  it); orjson (the feedback parser's JSON decoder); and tzdata, so that zoneinfo
  can name the server's TimeZone on a runtime image without a zoneinfo database;
- with a config file, that file as `ses-relay.toml` (the handler's default config).

Nothing else: not boto3 (the handler calls no AWS API, and the runtime has its
own), nor aiosmtpd, dkimpy, cryptography, openpyxl, prometheus-client or click,
which the handler never imports.

Wheels only (`--only-binary=:all:`), for CPython of the chosen version and the
manylinux platforms the runtime's glibc runs: python3.11 runs on Amazon Linux 2
(glibc 2.26), python3.12 and 3.13 on Amazon Linux 2023 (glibc 2.34). pip matches
only the platform tags it is given, so every manylinux tag up to that glibc is.

When the target Python is the one building, the modules are compiled to
checked-hash .pyc files (valid whatever times the zip gives the sources, and
naming the files where Lambda unpacks them), so that a cold start does not
compile pydantic; for another version they would be the wrong bytecode, so there
is none. The zip is reproducible: entries sorted, one fixed time, fixed
permissions, bytecode free of the build's temporary paths.
"""

from __future__ import annotations

import compileall
import importlib.metadata
import importlib.util
import py_compile
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HANDLER = "feedback.lambda_handler.handler"
PACKAGES = ("relay", "feedback")
CONFIG_NAME = "ses-relay.toml"
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's name -> the wheel platform's


@dataclass(frozen=True)
class Runtime:
    name: str
    os: str
    glibc: int  # the minor version of glibc 2.x


RUNTIMES = {
    "3.11": Runtime("python3.11", "Amazon Linux 2", 26),
    "3.12": Runtime("python3.12", "Amazon Linux 2023", 34),
    "3.13": Runtime("python3.13", "Amazon Linux 2023", 34),
}
# What the handler imports, as pinned distributions: (requirement name, distribution to pin by)
PINNED = (
    ("psycopg[binary,pool]", "psycopg"),
    ("psycopg-binary", "psycopg-binary"),
    ("psycopg-pool", "psycopg-pool"),
    ("pydantic", "pydantic"),
    ("orjson", "orjson"),
)
UNPINNED = ("tzdata",)  # data, the newer the better
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip: the file names tracebacks show
PIP_TIMEOUT = 600


class PackageError(Exception):
    """The zip could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class Built:
    path: Path
    size: int
    files: int
    runtime: str
    arch: str
    distributions: tuple[str, ...]  # "name version", as pip installed them
    compiled: bool


def platforms(arch: str, python: str) -> list[str]:
    """The manylinux platform tags the runtime of `python` on `arch` can load."""
    machine = ARCHES[arch]
    top = RUNTIMES[python].glibc
    return [f"manylinux2014_{machine}", *(f"manylinux_2_{minor}_{machine}" for minor in range(17, top + 1))]


def requirements(version: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """The dependencies to install, each pinned to the version installed here."""
    pinned = []
    for requirement, distribution in PINNED:
        try:
            pinned.append(f"{requirement}=={version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            raise PackageError(f"{distribution} is not installed here, so its version is unknown") from None
    return [*pinned, *UNPINNED]


def pip_command(
    target: Path, arch: str, python: str, wanted: Sequence[str], wheels: Path | None = None
) -> list[str]:
    """pip's command line; `wheels`: a folder of wheels to take them from, and no index."""
    command = [sys.executable, "-m", "pip", "install", "--target", str(target), "--only-binary=:all:",
               "--implementation", "cp", "--python-version", python, "--no-compile",
               "--disable-pip-version-check", "--no-warn-script-location", "--quiet"]  # fmt: skip
    if wheels is not None:
        command += ["--no-index", "--find-links", str(wheels)]
    for platform in platforms(arch, python):
        command += ["--platform", platform]
    return [*command, *wanted]


def config_to_bundle(path: Path) -> bytes:
    """The config file's bytes, if it is one to put in a zip: valid, and without a password."""
    from relay.config import ConfigError, StateConfig, from_dict

    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
        from_dict(data)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PackageError(f"cannot use {path} as the function's config: {exc}") from None
    except ConfigError as exc:
        raise PackageError(f"{path}: {exc}") from None
    state = data.get("state", {})
    if isinstance(state, dict) and StateConfig(url=state.get("url", "")).password:
        raise PackageError(
            f"{path} has a password in [state] url, and the zip would carry it: remove the url from the "
            "file and give the function SES_RELAY_STATE_URL (deploy/template.yaml takes it from "
            "Secrets Manager)"
        )
    return raw


def build(
    out: Path,
    *,
    arch: str = "x86_64",
    python: str = "3.12",
    config: Path | None = None,
    wheels: Path | None = None,
) -> Built:
    """Install, copy, compile and zip into `out` (replaced only once the new zip is complete).

    `wheels`: install from the wheels in that folder only, not from a package index (a
    build machine without one, or a wheelhouse that was checked).
    """
    if arch not in ARCHES or python not in RUNTIMES:
        raise PackageError(f"no Lambda runtime for Python {python} on {arch}")
    if wheels is not None and not wheels.is_dir():
        raise PackageError(f"no folder of wheels at {wheels}")
    bundled = config_to_bundle(config) if config is not None else None
    runtime = RUNTIMES[python]
    with tempfile.TemporaryDirectory(prefix="ses-relay-lambda-") as tmp:
        root = Path(tmp) / "package"
        _install(root, arch, python, wheels)
        distributions = installed(root)
        shutil.rmtree(root / "bin", ignore_errors=True)  # console scripts: nothing runs them
        for package in PACKAGES:
            _copy_package(package, root)
        if bundled is not None:
            (root / CONFIG_NAME).write_bytes(bundled)
        compiled = python == f"{sys.version_info[0]}.{sys.version_info[1]}"
        if compiled:
            compileall.compile_dir(
                root, quiet=1, workers=1, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                stripdir=str(root), prependdir=TASK_ROOT,
            )  # fmt: skip
        files = write_zip(root, out)
    return Built(out, out.stat().st_size, files, runtime.name, arch, distributions, compiled)


def _install(root: Path, arch: str, python: str, wheels: Path | None) -> None:
    command = pip_command(root, arch, python, requirements(), wheels)
    try:
        done = subprocess.run(  # noqa: S603 - pip with our own arguments
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackageError(f"pip did not run: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.startswith("ERROR")]
        why = "; ".join(lines[-2:]) or f"pip exited with status {done.returncode}"
        runtime = RUNTIMES[python]
        raise PackageError(
            f"pip could not install the dependencies for {runtime.name} on {arch}: {why}. "
            f"{runtime.name} runs on {runtime.os} (glibc 2.{runtime.glibc}): a dependency at the version "
            "installed here may have no wheel for it (try another --python), or "
            + (f"{wheels} lacks it" if wheels is not None else "the package index is unreachable")
        )


def installed(root: Path) -> tuple[str, ...]:
    """"name version" of every distribution pip put in `root`."""
    found = []
    for meta in sorted(root.glob("*.dist-info")):
        name, _, version = meta.name.removesuffix(".dist-info").partition("-")
        found.append(f"{name} {version}")
    return tuple(found)


def _copy_package(package: str, root: Path) -> None:
    spec = importlib.util.find_spec(package)  # found, not imported: relay never imports feedback
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise PackageError(f"the {package} package is not installed here")
    source = Path(locations[0])
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        target = root / package / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def write_zip(root: Path, out: Path) -> int:
    """Zip `root`'s files (sorted, one fixed time, mode 644) into `out`; how many files."""
    paths = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in paths:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_TIME)
            info.external_attr = (0o100644 << 16)  # a regular file every user may read, as Lambda needs
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    partial.replace(out)
    return len(paths)
