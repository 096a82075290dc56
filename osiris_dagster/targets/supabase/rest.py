"""The REST transport of the Supabase writer: supabase-py batches, with retries that are safe to make.

Requests are built by supabase-py (``create_client(url, service_role_key)`` ->
``.schema(s).table(t).insert / upsert / delete / select``) on an httpx client of our own, whose
response hook turns every non-2xx answer into a typed error *before* supabase-py parses it: that
is the only place the HTTP status and ``Retry-After`` are still visible. supabase-py's own retry
(GET-only, fixed delays) is switched off so there is exactly one retry policy, tenacity's:

* retried: HTTP 429 (waiting ``Retry-After`` when given), 5xx, connection refused / reset /
  dropped, timeouts; each retry is reported (``on_retry(attempt, delay_ms, reason)``) before the
  wait, which is full-jitter exponential backoff ``uniform(0, min(max_delay, base * 2**(n-1)))``;
* never retried: 401 (a wrong key: ``SupabaseAuthError``) and every other 4xx (bad value, missing
  column or table, RLS): resending the same request cannot succeed.

A retry must not duplicate rows. ``upsert`` and ``delete`` are idempotent. A plain ``insert`` is
not when the failure is *ambiguous* (the connection dropped or timed out after the request went
out; a gateway 502/504): PostgREST may have committed it. So an ``append`` with a primary key
retries an ambiguous failure as an insert that ignores duplicate keys
(``Prefer: resolution=ignore-duplicates``), and an ``append`` without one does not retry it at
all (it says so, and how to fix it). Unambiguous failures (connection refused, 429, 500, 503:
PostgREST answers those before or after rolling back the request's transaction) are retried as
they are.

``replace`` over REST cannot be one transaction (each request is its own). It is exact
nonetheless: all new rows are upserted first, then the keys present in the table are listed and
every row whose key is not among the new ones is deleted. Readers never see an empty table, but
can see old and new rows side by side until the deletes finish, and a failure midway leaves the
new rows plus some old ones (re-running the step converges). The new keys are kept in memory
(tens of bytes per row). Use the direct transport (``pg_dsn``) for an atomic replace.

Deliberately not here: DDL (REST cannot create tables), events (the caller's ``on_retry`` /
``on_progress`` decide what to record), secrets policy (messages never contain the key; the
framework masks them once more).
"""

from __future__ import annotations

import datetime as dt
import decimal
import email.utils
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pyarrow as pa
import tenacity
from supabase import ClientOptions, create_client

from osiris_dagster.formats.json_values import JsonRowEncoder, json_safe_value

__all__ = [
    "AmbiguousWriteError",
    "RetryPolicy",
    "SupabaseAuthError",
    "SupabaseRequestError",
    "SupabaseRestWriter",
    "TransientHttpError",
]

WriteMode = Literal["append", "upsert", "replace"]
RetryCallback = Callable[[int, int, str], None]

# Rows per GET when listing the keys of a replaced table. PostgREST's max-rows may cap a page
# lower; paging stops on an empty page, never on a short one, so any cap is safe.
_KEY_PAGE = 1000
# Keys per DELETE: the filter travels in the URL, which proxies cap around 8-16 KB.
_DELETE_CHUNK = 200


class SupabaseRequestError(Exception):
    """Supabase refused a request for a reason a retry cannot fix (4xx); the message is safe to log."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class SupabaseAuthError(SupabaseRequestError):
    """HTTP 401: the service role key is wrong, expired or for another project."""


class TransientHttpError(Exception):
    """429 / 5xx: worth retrying, after ``retry_after`` seconds when the server said so."""

    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))

    @property
    def ambiguous(self) -> bool:
        # A gateway timeout / bad gateway may hide a committed request; PostgREST's own 500 and
        # a 503 / 429 come back before (or instead of) a commit.
        return self.status in (502, 504) or self.status > 504


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # including the first
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0


class AmbiguousWriteError(Exception):
    """An insert failed in a way that may have committed it, and had no key to retry it safely."""


def _is_ambiguous(error: BaseException) -> bool:
    if isinstance(error, TransientHttpError):
        return error.ambiguous
    # Refused / unreachable: the request never arrived. Anything later may have been processed.
    return not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientHttpError | httpx.TransportError)


def describe_failure(error: BaseException) -> str:
    """A short reason for a retry event: never the request, never a header."""
    if isinstance(error, TransientHttpError):
        return str(error)[:300]
    return f"{type(error).__name__}: {str(error)[:200]}" if str(error) else type(error).__name__


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or ""
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("code", "message", "details", "hint") if body.get(k)]
        return "; ".join(parts)
    return response.reason_phrase or ""


def _check_response(response: httpx.Response) -> None:
    """httpx response hook: every non-2xx answer becomes one of our typed errors."""
    if response.is_success:
        return
    response.read()
    status = response.status_code
    detail = _error_message(response)
    if status == 429 or status >= 500:
        raise TransientHttpError(status, _retry_after_seconds(response.headers.get("retry-after")), detail)
    if status == 401:
        raise SupabaseAuthError(
            status,
            "Supabase rejected the service role key (HTTP 401): check the service_role_key of the connection "
            "(e.g. SUPABASE_SERVICE_ROLE_KEY) belongs to this project" + (f" [{detail}]" if detail else ""),
        )
    raise SupabaseRequestError(status, f"Supabase refused the request (HTTP {status}): {detail}")


class _Backoff(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, or the server's ``Retry-After`` when it gave one."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=policy.base_delay_s, max=policy.max_delay_s)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, TransientHttpError) and error.retry_after is not None:
            return error.retry_after
        return float(self._jitter(retry_state))


class SupabaseRestWriter:
    """Writes Arrow batches to one Supabase table through PostgREST."""

    def __init__(
        self,
        url: str,
        service_role_key: str,
        schema: str,
        table: str,
        *,
        retry: RetryPolicy = RetryPolicy(),
        on_retry: RetryCallback | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.table = table
        self.retry = retry
        self.on_retry = on_retry
        self._http = httpx.Client(timeout=timeout_s, event_hooks={"response": [_check_response]})
        options = ClientOptions(schema=schema, httpx_client=self._http, postgrest_client_retry=False)
        self._client = create_client(url, service_role_key, options)
        self._postgrest = self._client.postgrest.schema(schema)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupabaseRestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------
    # Public operations

    def table_exists(self) -> bool:
        try:
            self._call(lambda: self._query().select("*").limit(0).execute())
        except SupabaseRequestError as error:
            if error.status == 404:
                return False
            raise
        return True

    def write(
        self,
        mode: WriteMode,
        arrow_schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        primary_key: Sequence[str] = (),
        batch_size: int = 500,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        if mode in ("upsert", "replace") and not primary_key:
            raise ValueError(f"write_mode '{mode}' needs a primary_key")
        missing = [c for c in primary_key if c not in arrow_schema.names]
        if missing:
            raise ValueError(f"primary_key column(s) {', '.join(missing)} are not in the written table's columns")
        encoder = JsonRowEncoder(arrow_schema)
        key_columns = list(primary_key)
        new_keys: set[tuple[Any, ...]] = set()
        key_types = [arrow_schema.field(c).type for c in key_columns]
        written = 0
        for rows in _rebatch(batches, encoder, batch_size):
            if mode == "append":
                self._append(rows, key_columns)
            else:
                self._upsert(rows, key_columns)
            if mode == "replace":
                new_keys.update(_canonical_key(row, key_columns, key_types) for row in rows)
            written += len(rows)
            if on_progress is not None:
                on_progress(written)
        if mode == "replace":
            self._delete_stale(key_columns, key_types, new_keys)
        return written

    # ---------------------------------------------------------------------------------------
    # Requests

    def _query(self) -> Any:
        return self._postgrest.from_(self.table)

    def _append(self, rows: list[dict[str, Any]], key_columns: list[str]) -> None:
        state = {"ambiguous": False}

        def send() -> None:
            if state["ambiguous"]:
                # The first attempt may have landed: skip rows whose key is already there.
                self._query().upsert(
                    rows, on_conflict=",".join(key_columns), ignore_duplicates=True, returning="minimal"
                ).execute()
                return
            self._query().insert(rows, returning="minimal").execute()

        def may_retry(error: BaseException) -> bool:
            if _is_ambiguous(error):
                if not key_columns:
                    return False
                state["ambiguous"] = True
            return True

        try:
            self._call(send, may_retry=may_retry)
        except (TransientHttpError, httpx.TransportError) as error:
            if key_columns or not _is_ambiguous(error):
                raise
            raise AmbiguousWriteError(
                f"a batch insert failed in a way that may have committed it ({describe_failure(error)}); without "
                "a primary key a retry could duplicate rows, so it was not retried (give the key columns, or use "
                "write_mode upsert, to make append retries safe)"
            ) from None

    def _upsert(self, rows: list[dict[str, Any]], key_columns: list[str]) -> None:
        self._call(lambda: self._query().upsert(rows, on_conflict=",".join(key_columns), returning="minimal").execute())

    def _delete_stale(
        self, key_columns: list[str], key_types: list[pa.DataType], new_keys: set[tuple[Any, ...]]
    ) -> None:
        stale: list[tuple[Any, ...]] = []
        for row in self._existing_keys(key_columns):
            if _canonical_key(row, key_columns, key_types) not in new_keys:
                stale.append(tuple(row[c] for c in key_columns))
        for start in range(0, len(stale), _DELETE_CHUNK):
            chunk = stale[start : start + _DELETE_CHUNK]
            self._call(lambda chunk=chunk: self._delete_keys(key_columns, chunk))

    def _delete_keys(self, key_columns: list[str], keys: list[tuple[Any, ...]]) -> None:
        query = self._query().delete(returning="minimal")
        if len(key_columns) == 1:
            query = query.in_(key_columns[0], [json_safe_value(k[0]) for k in keys])
        else:
            conditions = (
                "and(" + ",".join(f"{c}.eq.{_filter_literal(v)}" for c, v in zip(key_columns, key, strict=True)) + ")"
                for key in keys
            )
            query = query.or_(",".join(conditions))
        query.execute()

    def _existing_keys(self, key_columns: list[str]) -> list[dict[str, Any]]:
        # Listed completely before anything is deleted: deleting while paging by offset would skip rows.
        keys: list[dict[str, Any]] = []
        offset = 0
        while True:

            def page(offset: int = offset) -> list[dict[str, Any]]:
                query = self._query().select(",".join(key_columns))
                for column in key_columns:
                    query = query.order(column)
                return list(query.range(offset, offset + _KEY_PAGE - 1).execute().data)

            rows = self._call(page)
            if not rows:
                return keys
            keys.extend(rows)
            offset += len(rows)

    def _call(self, request: Callable[[], Any], may_retry: Callable[[BaseException], bool] | None = None) -> Any:
        """Run one request under the retry policy."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            delay_ms = int((state.next_action.sleep if state.next_action else 0) * 1000)
            if self.on_retry is not None and error is not None:
                self.on_retry(state.attempt_number, delay_ms, describe_failure(error))

        def retryable(error: BaseException) -> bool:
            return _is_transient(error) and (may_retry is None or may_retry(error))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.retry.attempts)),
            wait=_Backoff(self.retry),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=before_sleep,
            sleep=time.sleep,
            reraise=True,
        )
        return retrying(request)


def _rebatch(
    batches: Iterable[pa.RecordBatch], encoder: JsonRowEncoder, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    """Rows in requests of exactly ``batch_size`` (the last one shorter), whatever the staged batch sizes."""
    pending: list[dict[str, Any]] = []
    for batch in batches:
        for start in range(0, batch.num_rows, batch_size):
            pending.extend(encoder.rows(batch.slice(start, batch_size)))
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
    if pending:
        yield pending


def _filter_literal(value: Any) -> str:
    """A value inside a PostgREST logic-tree filter: quoted when it holds a reserved character."""
    text = "null" if value is None else str(json_safe_value(value))
    if value is True or value is False:
        text = "true" if value else "false"
    if any(ch in text for ch in ',.:()"\\ '):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _canonical_key(row: dict[str, Any], key_columns: list[str], key_types: list[pa.DataType]) -> tuple[Any, ...]:
    """A key comparable whether it came from our JSON rows or from PostgREST's JSON answer."""
    return tuple(_canonical(row[c], t) for c, t in zip(key_columns, key_types, strict=True))


def _canonical(value: Any, arrow_type: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_integer(arrow_type):
        return int(value)
    if pa.types.is_decimal(arrow_type) or pa.types.is_floating(arrow_type):
        return decimal.Decimal(str(value)).normalize()
    if pa.types.is_timestamp(arrow_type):
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed
    if pa.types.is_date(arrow_type):
        return dt.date.fromisoformat(str(value)[:10])
    if pa.types.is_time(arrow_type):
        return dt.time.fromisoformat(str(value))
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value) if not isinstance(value, bool) else value
