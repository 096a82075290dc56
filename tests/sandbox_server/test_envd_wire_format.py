"""Wire-level checks the SDK cannot reach: keepalives, deadline errors, message validity.

The SDK always asks for 50-second keepalives, so keepalive frames are checked with a
raw HTTP client; every streamed message is parsed with the SDK's own generated
classes *without* ``ignore_unknown_fields`` so a misspelled field fails here.
"""

from __future__ import annotations

import base64
import json
import ssl
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2b import Sandbox
from e2b.envd.process import process_pb

from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.sandbox_trust import SANDBOX_DOMAIN

pytestmark = pytest.mark.sandbox


def _envd(server: LocalSandboxServer) -> httpx.Client:
    """A client that reaches envd the way the SDK does: a CONNECT tunnel through the server, then TLS."""
    return httpx.Client(proxy=server.url, verify=ssl.create_default_context(cafile=str(server.trust_file)))


def _host(sandbox_id: str) -> str:
    return f"https://49983-{sandbox_id}.{SANDBOX_DOMAIN}"


def _envelope(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


def _frames(raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    frames = []
    offset = 0
    while offset < len(raw):
        flags, length = struct.unpack_from(">BI", raw, offset)
        frames.append((flags, json.loads(raw[offset + 5 : offset + 5 + length])))
        offset += 5 + length
    return frames


@pytest.fixture
def sandbox_id(server: LocalSandboxServer) -> Iterator[str]:
    sbx = Sandbox.create(timeout=60, **server.sdk_kwargs())
    try:
        yield sbx.sandbox_id
    finally:
        sbx.kill()


def _start(server: LocalSandboxServer, sandbox_id: str, cmd: str, **headers: str) -> bytes:
    body = _envelope({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}})

    def chunked() -> Iterator[bytes]:  # the SDK streams this body chunked, so do we
        yield body[:3]
        yield body[3:]

    response = _envd(server).post(
        f"{_host(sandbox_id)}/process.Process/Start",
        content=chunked(),
        headers={"Content-Type": "application/connect+json", "E2b-Sandbox-Id": sandbox_id, **headers},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/connect+json"
    return response.content


def test_start_stream_frames(server: LocalSandboxServer, sandbox_id: str) -> None:
    raw = _start(server, sandbox_id, "sleep 0.5; echo out; echo err >&2; exit 4", **{"Keepalive-Ping-Interval": "0.2"})
    frames = _frames(raw)
    flags = [f for f, _ in frames]
    assert flags[:-1] == [0] * (len(frames) - 1) and flags[-1] == 0x02
    assert frames[-1][1] == {}
    events = [process_pb.StartResponse.from_json(json.dumps(m)).event for _, m in frames[:-1]]
    kinds = [e.event.field for e in events]
    assert kinds[0] == "start" and events[0].event.value.pid > 0
    assert "keepalive" in kinds
    assert kinds[-1] == "end"
    end = events[-1].event.value
    assert (end.exit_code, end.exited, end.status) == (4, True, "exit status 4")
    data = [m["event"]["data"] for _, m in frames if "data" in m.get("event", {})]
    assert b"".join(base64.b64decode(d["stdout"]) for d in data if "stdout" in d) == b"out\n"
    assert b"".join(base64.b64decode(d["stderr"]) for d in data if "stderr" in d) == b"err\n"


def test_connect_timeout_ms_kills_and_reports_deadline(server: LocalSandboxServer, sandbox_id: str) -> None:
    frames = _frames(_start(server, sandbox_id, "sleep 5", **{"Connect-Timeout-Ms": "300"}))
    assert frames[0][1]["event"]["start"]["pid"] > 0
    flags, last = frames[-1]
    assert flags == 0x02
    assert last["error"]["code"] == "deadline_exceeded"


def test_unary_errors_use_connect_codes(server: LocalSandboxServer, sandbox_id: str) -> None:
    headers = {"Content-Type": "application/json", "E2b-Sandbox-Id": sandbox_id}
    response = _envd(server).post(
        f"{_host(sandbox_id)}/filesystem.Filesystem/Stat", json={"path": "/nope"}, headers=headers
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    response = _envd(server).post(
        f"{_host(sandbox_id)}/process.Process/SendSignal",
        json={"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"},
        headers=headers,
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    response = _envd(server).get(f"{_host('gone')}/health", headers={"E2b-Sandbox-Id": "gone"})
    assert response.status_code == 502 and "was not found" in response.json()["message"]
