"""[state] url: a PostgreSQL URL or nothing, overridable from the environment, its password never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from relay import config as configuration
from relay.config import ConfigError, StateConfig
from relay.logredact import MASK, RedactSecrets, redact_url

SECRET = "pa55-w0rd-x"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://relay@db.example.com/ses",
        f"postgresql://relay:{SECRET}@db.example.com:6432/ses?sslmode=verify-full",
        "postgres://relay@10.0.0.5/ses",
        "postgresql://relay@[::1]:5432/ses",
        "postgresql:///ses",
        "  postgresql://relay@db/ses  ",
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    state = configuration.from_dict({"state": {"url": url}}).state
    assert state.url == url.strip() and state.shared


def test_an_empty_url_keeps_the_state_in_the_local_store() -> None:
    for data in ({}, {"state": {}}, {"state": {"url": ""}}, {"state": {"url": "   "}}):
        assert not configuration.from_dict(data).state.shared


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://relay:{SECRET}@db/ses", "not a PostgreSQL URL"),
        (f"db.example.com:{SECRET}", "not a PostgreSQL URL"),
        (f"postgresql://relay:{SECRET}@db:notaport/ses", "port 'notaport'"),
        (f"postgresql://relay:{SECRET}@db:70000/ses", "port '70000'"),
        (f"postgresql://relay:{SECRET}@db/ses?colour=blue", "not a valid PostgreSQL URL"),
    ],
)
def test_a_bad_url_is_an_error_naming_state_url_without_its_password(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        configuration.from_dict({"state": {"url": url}})
    assert caught.value.key == "state.url"
    assert why in caught.value.message and SECRET not in str(caught.value)


def test_the_other_state_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"state\.pool_size"):
        configuration.from_dict({"state": {"pool_size": 0}})
    with pytest.raises(ConfigError, match=r"state\.connect_timeout"):
        configuration.from_dict({"state": {"connect_timeout": "0.5s"}})
    with pytest.raises(ConfigError, match=r"state\.pool: unknown key"):
        configuration.from_dict({"state": {"pool": 3}})


def test_the_environment_overrides_the_file_and_is_checked_as_the_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ses-relay.toml"
    path.write_text('[state]\nurl = "postgresql://relay@file-db/ses"\npool_size = 2\n')
    assert configuration.load(path).state.url == "postgresql://relay@file-db/ses"
    monkeypatch.setenv(configuration.STATE_URL_ENV, "postgresql://relay@env-db/ses")
    state = configuration.load(path).state
    assert (state.url, state.pool_size) == ("postgresql://relay@env-db/ses", 2)
    assert configuration.load(None).state.url == "postgresql://relay@env-db/ses"  # no file at all
    monkeypatch.setenv(configuration.STATE_URL_ENV, "")  # set but empty: the file's stands
    assert configuration.load(path).state.url == "postgresql://relay@file-db/ses"
    monkeypatch.setenv(configuration.STATE_URL_ENV, f"redis://relay:{SECRET}@env-db/0")
    with pytest.raises(ConfigError) as caught:
        configuration.load(path)
    assert caught.value.key == "state.url" and "SES_RELAY_STATE_URL" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_password_is_in_no_printed_form_of_the_configuration() -> None:
    config = configuration.from_dict({"state": {"url": f"postgresql://relay:{SECRET}@db/ses"}})
    assert SECRET not in repr(config) and SECRET not in str(config.state)
    assert config.state.where == f"postgresql://relay:{MASK}@db/ses"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://relay:{SECRET}@db/ses",
        f"postgres://relay:{SECRET}@db:5432/ses?sslmode=require",
        f"postgresql://relay@db/ses?password={SECRET}&sslmode=require",
        f"could not connect to postgresql://relay:{SECRET}@db/ses: timeout",
        f"postgresql://relay:{SECRET}@with-at@db/ses",
    ],
)
def test_redact_url_masks_the_password_wherever_the_url_carries_it(text: str) -> None:
    assert SECRET not in redact_url(text) and MASK in redact_url(text)


def test_a_state_url_in_a_log_line_loses_its_password() -> None:
    url = f"postgresql://u:{SECRET}@h/d"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "state at %s", (url,), None)
    RedactSecrets().filter(record)
    assert SECRET not in record.getMessage()


def test_where_without_a_url_is_empty() -> None:
    assert StateConfig().where == "" and not StateConfig().shared
