"""README's configuration reference against relay/config/: every key, every default.

A key added to the configuration without a row in README's tables, a row for a key
that no longer exists, or a documented default that is not the real one fails here.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from pydantic import BaseModel

from relay import config as configuration
from tests.conftest import ROOT

SECTIONS: dict[str, tuple[str, type[BaseModel]]] = {
    "`[classes.NAME]`": ("classes", configuration.ClassConfig),
    "`[ses]`": ("ses", configuration.SesConfig),
    '`[dkim."DOMAIN"]`': ("dkim", configuration.DkimDomainConfig),
    "`[[listeners]]`": ("listeners", configuration.ListenerConfig),
    "`[limits]`": ("limits", configuration.LimitsConfig),
    "`[tls]`": ("tls", configuration.TlsConfig),
    "`[auth]`": ("auth", configuration.AuthConfig),
    "`[feedback]`": ("feedback", configuration.FeedbackConfig),
    "`[metrics]`": ("metrics", configuration.MetricsConfig),
    "`[report]`": ("report", configuration.ReportConfig),
    "`[policy]`": ("policy", configuration.PolicyConfig),
    "`[notices]`": ("notices", configuration.NoticesConfig),
    "`[guard]`": ("guard", configuration.GuardConfig),
    "`[state]`": ("state", configuration.StateConfig),
}


def reference() -> dict[str, dict[str, str]]:
    """{heading: {key: default cell}} from README's "Every configuration key" tables."""
    text = (ROOT / "README.md").read_text()
    start = text.index("### Every configuration key")
    end = text.index("\n## ", start)
    tables: dict[str, dict[str, str]] = {}
    heading = None
    for line in text[start:end].splitlines():
        if line.startswith("#### "):
            heading = line[5:].strip()
            tables[heading] = {}
        elif heading and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[heading][cells[0].strip("`")] = cells[1]
    return tables


def documented_default(model: type[BaseModel], key: str, cell: str) -> Any:
    """The documented default as the model reads it: the cell is a TOML value in backticks."""
    value = tomllib.loads(f"v = {cell.strip('`')}")["v"]
    return getattr(model.model_validate({key: value}), key) if key in model.model_fields else value


def test_every_section_and_top_level_key_has_a_table() -> None:
    tables = reference()
    assert set(tables) == {"Top level", *SECTIONS}
    section_fields = {field for field, _ in SECTIONS.values()}
    assert section_fields <= set(configuration.Config.model_fields)
    top = set(configuration.Config.model_fields) - section_fields
    assert set(tables["Top level"]) == top


@pytest.mark.parametrize("heading", ["Top level", *SECTIONS])
def test_each_key_is_documented_with_its_default(heading: str) -> None:
    rows = reference()[heading]
    if heading == "Top level":
        model: type[BaseModel] = configuration.Config
        keys = set(rows)
    else:
        model = SECTIONS[heading][1]
        keys = set(model.model_fields)
        assert set(rows) == keys, f"{heading}: README rows differ from relay/config/"
    for key in sorted(keys):
        field = model.model_fields[key]
        cell = rows[key]
        if field.is_required():
            assert cell == "required", (heading, key)
            continue
        default = field.get_default(call_default_factory=True)
        if default is None:
            assert cell == "none", (heading, key)
            continue
        assert cell.startswith("`") and cell.endswith("`"), (heading, key, cell)
        assert documented_default(model, key, cell) == default, (heading, key, cell)
