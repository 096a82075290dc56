"""Session-scoped local sandbox server for the e2b SDK contract tests.

The tests drive the REAL ``e2b`` SDK (pinned in pyproject.toml) against
``LocalSandboxServer``; nothing of the SDK is mocked. A bump of ``e2b`` must rerun
``pytest -m sandbox``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import Sandbox

from osiris_dagster.sandbox_server import LocalSandboxServer


@pytest.fixture(scope="session")
def server() -> Iterator[LocalSandboxServer]:
    with LocalSandboxServer(port=0) as srv:
        yield srv


@pytest.fixture
def sdk(server: LocalSandboxServer) -> dict[str, str]:
    """Connection kwargs for Sandbox.create/connect/list."""
    return server.sdk_kwargs()


@pytest.fixture
def sbx(sdk: dict[str, str]) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=120, **sdk)
    try:
        yield sandbox
    finally:
        sandbox.kill()
