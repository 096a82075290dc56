"""The subset of E2B's control-plane REST API the SDK uses for a sandbox's lifecycle.

Shapes follow the SDK's generated client (``e2b/api/client/api/sandboxes/*.py`` and
``models/*.py``): create answers 201 with the ``Sandbox`` model, connect 200 with the
same model, kill/set-timeout 204, 404 ``{"code", "message"}`` for unknown ids
(``SandboxApi._cls_kill`` turns 404 into ``False``, get_info/connect into
``SandboxNotFoundException``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import urllib.parse
from typing import Any

from .http_exchange import Exchange
from .sandbox import Sandbox, SandboxRegistry

DEFAULT_TIMEOUT_S = 15  # E2B's server-side default when "timeout" is omitted
MAX_TIMEOUT_S = 24 * 60 * 60

_SANDBOX_ROUTE = re.compile(r"^/sandboxes/(?P<id>[^/]+)$")
_TIMEOUT_ROUTE = re.compile(r"^/sandboxes/(?P<id>[^/]+)/timeout$")
_CONNECT_ROUTE = re.compile(r"^/(?:v2/)?sandboxes/(?P<id>[^/]+)/connect$")
_REFRESH_ROUTE = re.compile(r"^/sandboxes/(?P<id>[^/]+)/refreshes$")


def is_rest_path(path: str) -> bool:
    return path.startswith(("/sandboxes", "/v2/sandboxes"))


def handle_rest(exchange: Exchange, registry: SandboxRegistry, api_keys: frozenset[str] | None = None) -> None:
    """Route one control-plane request.

    ``api_keys``: the ``X-API-KEY`` values accepted, answering anything else 401 as E2B does (the
    SDK raises ``AuthenticationException``); ``None`` accepts any key (the default: the local
    server is for one user's own tests, and a wrong key there would only be noise).
    """
    method, path = exchange.method, exchange.path
    if api_keys is not None and exchange.headers.get("X-API-KEY") not in api_keys:
        exchange.drain()
        return exchange.send_api_error(401, "Invalid API key")
    if method == "POST" and path in ("/sandboxes", "/v2/sandboxes"):
        return _create(exchange, registry)
    if method == "GET" and path in ("/sandboxes", "/v2/sandboxes"):
        return _list(exchange, registry)
    if method == "POST" and (m := _TIMEOUT_ROUTE.match(path)):
        return _set_timeout(exchange, registry, m["id"])
    if method == "POST" and (m := _CONNECT_ROUTE.match(path)):
        return _connect(exchange, registry, m["id"])
    if method == "POST" and (m := _REFRESH_ROUTE.match(path)):
        return _refresh(exchange, registry, m["id"])
    if method == "GET" and (m := _SANDBOX_ROUTE.match(path)):
        return _get(exchange, registry, m["id"])
    if method == "DELETE" and (m := _SANDBOX_ROUTE.match(path)):
        exchange.drain()
        if registry.kill(m["id"]):
            return exchange.send(204)
        return _not_found(exchange, m["id"])
    exchange.drain()
    exchange.send_api_error(404, f"{method} {path} is not implemented by the local sandbox server")


def _json_body(exchange: Exchange) -> dict[str, Any]:
    raw = exchange.body()
    if not raw.strip():
        return {}
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    return parsed


def _timeout(body: dict[str, Any], default: int = DEFAULT_TIMEOUT_S) -> int:
    value = body.get("timeout", default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("timeout must be a non-negative integer (seconds)")
    return min(value, MAX_TIMEOUT_S)


def _str_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name} must be an object of strings")
    return dict(value)


def _not_found(exchange: Exchange, sandbox_id: str) -> None:
    exchange.send_api_error(404, f"sandbox {sandbox_id} not found")


def _create(exchange: Exchange, registry: SandboxRegistry) -> None:
    try:
        body = _json_body(exchange)
        template_id = body.get("templateID") or "base"
        if not isinstance(template_id, str):
            raise ValueError("templateID must be a string")
        sandbox = registry.create(
            template_id=template_id,
            timeout_s=_timeout(body),
            metadata=_str_map(body.get("metadata"), "metadata"),
            env_vars=_str_map(body.get("envVars"), "envVars"),
        )
    except ValueError as exc:
        return exchange.send_api_error(400, str(exc))
    exchange.send_json(201, sandbox.created())


def _connect(exchange: Exchange, registry: SandboxRegistry, sandbox_id: str) -> None:
    try:
        timeout_s = _timeout(_json_body(exchange))
    except ValueError as exc:
        return exchange.send_api_error(400, str(exc))
    sandbox = registry.extend_timeout(sandbox_id, timeout_s)
    if sandbox is None:
        return _not_found(exchange, sandbox_id)
    exchange.send_json(200, sandbox.created())


def _set_timeout(exchange: Exchange, registry: SandboxRegistry, sandbox_id: str) -> None:
    try:
        timeout_s = _timeout(_json_body(exchange), default=-1)
    except ValueError as exc:
        return exchange.send_api_error(400, str(exc))
    if timeout_s < 0:
        return exchange.send_api_error(400, "timeout is required")
    if not registry.set_timeout(sandbox_id, timeout_s):
        return _not_found(exchange, sandbox_id)
    exchange.send(204)


def _refresh(exchange: Exchange, registry: SandboxRegistry, sandbox_id: str) -> None:
    try:
        duration = _json_body(exchange).get("duration", DEFAULT_TIMEOUT_S)
    except ValueError as exc:
        return exchange.send_api_error(400, str(exc))
    if registry.extend_timeout(sandbox_id, float(duration)) is None:
        return _not_found(exchange, sandbox_id)
    exchange.send(204)


def _get(exchange: Exchange, registry: SandboxRegistry, sandbox_id: str) -> None:
    exchange.drain()
    sandbox = registry.get(sandbox_id)
    if sandbox is None:
        return _not_found(exchange, sandbox_id)
    exchange.send_json(200, sandbox.detail())


def _metadata_filter(raw: str | None) -> dict[str, str]:
    """Decode the SDK's metadata query (``sandbox_sync/paginator.py``).

    The SDK percent-quotes each key and value, urlencodes the pairs into one string
    and sends that as the ``metadata`` parameter, so it is decoded twice.
    """
    if not raw:
        return {}
    return {
        urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in urllib.parse.parse_qsl(raw, keep_blank_values=True)
    }


def _matches(sandbox: Sandbox, wanted: dict[str, str], states: set[str], template: str | None) -> bool:
    if any(sandbox.metadata.get(k) != v for k, v in wanted.items()):
        return False
    if states and "running" not in states:
        return False  # local sandboxes are never paused
    return template is None or template in (sandbox.template_id,)


def _list(exchange: Exchange, registry: SandboxRegistry) -> None:
    """One page of sandboxes, E2B's way: ``limit`` (default 100) per page, ``x-next-token`` header.

    The token names the last sandbox of the page (start time and id), not an offset, so a
    sandbox created or killed between two pages neither repeats nor shifts the next page
    (``SandboxPaginator`` follows ``has_next`` until the header is absent).
    """
    exchange.drain()
    wanted = _metadata_filter(exchange.query_value("metadata"))
    states = {s for s in (exchange.query_value("state") or "").split(",") if s}
    unknown = states - {"running", "paused"}
    if unknown:
        return exchange.send_api_error(400, f"invalid state {sorted(unknown)[0]!r}: expected running or paused")
    template = exchange.query_value("template")
    # E2B lists newest first unless asked otherwise.
    descending = (exchange.query_value("order") or "desc").lower() != "asc"
    try:
        limit = _page_limit(exchange.query_value("limit"))
        after = _decode_token(exchange.query_value("nextToken"))
        started_after = _timestamp(exchange.query_value("startedAfter"))
    except ValueError as exc:
        return exchange.send_api_error(400, str(exc))
    sandboxes = sorted(
        (
            s
            for s in registry.list()
            # startedAt travels with microsecond precision: compare at that precision
            if _matches(s, wanted, states, template)
            and (started_after is None or round(s.started_at, 6) >= started_after - 1e-6)
        ),
        key=lambda s: (s.started_at, s.sandbox_id),
        reverse=descending,
    )
    if after is not None:
        sandboxes = [
            s
            for s in sandboxes
            if ((s.started_at, s.sandbox_id) < after if descending else (s.started_at, s.sandbox_id) > after)
        ]
    page, rest = sandboxes[:limit], sandboxes[limit:]
    headers = {"x-next-token": _encode_token(page[-1])} if rest else {}
    exchange.send(
        200,
        json.dumps([s.detail() for s in page], separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def _timestamp(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        # An unencoded "+01:00" offset arrives as " 01:00" after query decoding.
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+")).timestamp()
    except ValueError as exc:
        raise ValueError(f"invalid startedAfter {raw!r}: expected an RFC 3339 time") from exc


DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 100


def _page_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit must be an integer between 1 and {MAX_PAGE_LIMIT}, got {raw!r}")
    return int(raw)


def _encode_token(sandbox: Sandbox) -> str:
    raw = json.dumps([sandbox.started_at, sandbox.sandbox_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(raw: str | None) -> tuple[float, str] | None:
    if not raw:
        return None
    try:
        started_at, sandbox_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return float(started_at), str(sandbox_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid nextToken {raw!r}") from exc
