"""The masking policy: by key, by registered value, and URL passwords in free text."""

from __future__ import annotations

import json
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


def test_a_secret_is_masked_in_every_form_it_is_written_in() -> None:
    from urllib.parse import quote, quote_plus

    secret = "p@ss:w/o%rd$ 'q\"\\#{x}"
    register_secret(secret)
    # Forms computed here with the standard library, not with the product's own list.
    forms = [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret)[1:-1])[1:-1],  # JSON inside JSON
        repr(secret)[1:-1],
    ]
    for form in forms:
        masked = mask_text(f"before {form} after")
        assert masked == "before *** after", (form, masked)


def test_url_password_with_at_signs_is_encoded_for_the_driver_and_masked_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.engine import make_url

    from osiris_dagster.connections import load_profiles

    connections = tmp_path / "connections.yaml"
    connections.write_text(
        "connections:\n  mysql:\n    m: {url: 'mysql+pymysql://app:${OSIRIS_T_PW}@db.example:3306/x'}\n"
    )
    password = "Quokka@two@signs:/#?"
    connection = load_profiles(connections).resolve("mysql", "m", {"OSIRIS_T_PW": password})
    # The URL the driver gets carries the password exactly (SQLAlchemy's own parser decodes it).
    assert make_url(connection.fields["url"]).password == password
    assert make_url(connection.fields["url"]).host == "db.example"
    masked = json.dumps(connection.masked_fields())
    assert "Quokka" not in masked and "signs" not in masked, masked
    assert mask_text(f"login failed for {password!r}") == "login failed for '***'"
