"""The masking policy: by key, by registered value, and URL passwords in free text."""

from __future__ import annotations

import logging

from osiris_dagster.secrets import is_secret_key, mask_secrets, mask_text, register_secret


def test_secret_keys_are_known_by_name_but_table_keys_are_not() -> None:
    for name in ("password", "service_role_key", "api_key", "pg_dsn", "token", "MYSQL_PASSWORD", "anon_key"):
        assert is_secret_key(name), name
    for name in ("primary_key", "foreign_keys", "table", "query", "key_columns"):
        assert not is_secret_key(name), name


def test_registered_values_and_url_passwords_are_masked_anywhere() -> None:
    register_secret("Okapi-Secret-4242")
    text = "connect failed: mysql://app:Okapi-Secret-4242@db:3306/x and postgresql://u:other-pw@h/db"
    masked = mask_text(text)
    assert "Okapi-Secret-4242" not in masked and "other-pw" not in masked
    assert "mysql://app:***@db:3306/x" in masked and "postgresql://u:***@h/db" in masked


def test_mask_secrets_blanks_secret_keys_deeply_and_keeps_structure() -> None:
    config = {"connection": {"password": "x1", "host": "h"}, "steps": [{"api_token": "t"}], "primary_key": "id"}
    assert mask_secrets(config) == {
        "connection": {"password": "***", "host": "h"},
        "steps": [{"api_token": "***"}],
        "primary_key": "id",
    }


def test_log_records_of_any_logger_are_masked_before_any_handler_sees_them(caplog) -> None:  # type: ignore[no-untyped-def]
    register_secret("Lemur-Token-9090")
    logger = logging.getLogger("some.third_party.library")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("token is %s", "Lemur-Token-9090")
    assert "Lemur-Token-9090" not in caplog.text and "token is ***" in caplog.text
