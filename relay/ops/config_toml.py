"""Configuration back to TOML text (pure): what `setup-aws` prints for the operator to keep.

Python's tomllib reads TOML but cannot write it, and the configuration is small and
regular (tables, arrays of tables, strings, numbers, booleans, durations), so a
writer of that subset is a page. `config_data` keeps only the keys the operator
set, so the printed file stays theirs plus what setup-aws adds, not every default.
Comments in the original file are not kept: TOML parsers drop them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import PurePath
from typing import Any

from relay.config import Config

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def config_data(config: Config) -> dict[str, Any]:
    """The settings the operator gave (not the defaults), as plain TOML-ready values."""
    return _plain(config.model_dump(exclude_unset=True))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"
    if isinstance(value, PurePath):
        return str(value)
    return value


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are all valid in a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(path: list[str], data: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in data.items() if _is_table_array(v)}
    if path and (scalars or not (tables or arrays)):
        out.append(f"\n[{'.'.join(_key(p) for p in path)}]")
    for k, v in scalars.items():
        out.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables.items():
        _table([*path, k], v, out)
    for k, items in arrays.items():
        for item in items:
            out.append(f"\n[[{'.'.join(_key(p) for p in [*path, k])}]]")
            nested = {ik: iv for ik, iv in item.items() if isinstance(iv, Mapping) or _is_table_array(iv)}
            for ik, iv in item.items():
                if ik not in nested:
                    out.append(f"{_key(ik)} = {_value(iv)}")
            if nested:
                raise TypeError(f"tables inside [[{k}]] are not supported")


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text for `data` (tables become [sections], lists of tables [[arrays]])."""
    out: list[str] = []
    _table([], data, out)
    return "\n".join(out).lstrip("\n") + "\n"
