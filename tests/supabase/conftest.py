"""Fixtures for the Supabase writer: a real PostgreSQL database and the PostgREST-compatible server on it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.supabase.postgrest_server import PostgrestServer

SERVICE_KEY = "sb-test-service-role-9f3c1a7e5b2d"


@pytest.fixture
def pg_conninfo(postgres_database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"


@pytest.fixture
def pg(pg_conninfo: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_conninfo, autocommit=True) as connection:
        yield connection


@pytest.fixture
def postgrest(pg_conninfo: str) -> Iterator[PostgrestServer]:
    with PostgrestServer(pg_conninfo, SERVICE_KEY) as server:
        yield server
