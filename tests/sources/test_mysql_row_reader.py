"""The C row reader (``sources._mysql_rows``) under what a real network and a real server do to it.

The conformance suite shows the reader gives the server's text for every kind of value; these
tests show it stays correct, or fails cleanly, when the result is not a tidy few rows: a
connection killed mid-result, a reading process killed mid-read, rows longer than one protocol
packet, bytes that are not a valid result at all, two reads at once, a connection in another
charset.

Expected values never come from the product: they are the server's own text (pymysql with its
decoders removed, or ``LOWER(HEX(col))`` computed by the server), or packets built here by hand
from the MySQL protocol (3-byte little-endian length, 1-byte sequence number, payload; a row
payload is one length-encoded string per column).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.engine import URL

from osiris_dagster.sources import _mysql_rows
from osiris_dagster.sources.mysql_reader import FORCE_PATH_ENV
from osiris_dagster.sources.sql_extract import SourceError, extract_to_staging
from osiris_dagster.staging import iter_staged_batches
from tests.conftest import REPO, connect_mariadb
from tests.sources.test_conformance_mariadb import server_text

pytestmark = pytest.mark.mariadb

Cell = bytes | None

# ---------------------------------------------------------------------------------------------
# Packets built by hand (MySQL client/server protocol: "MySQL Packets", "Text Resultset Row")

MAX_PAYLOAD = 0xFFFFFF
EOF_PAYLOAD = b"\xfe\x00\x00\x02\x00"  # EOF: no warnings, SERVER_STATUS_AUTOCOMMIT
INTERRUPTED = b"\xff" + (1317).to_bytes(2, "little") + b"#70100" + b"Query execution was interrupted"


def lenenc(cell: Cell) -> bytes:
    """One column of a text-protocol row: 0xFB for NULL, else a length-encoded string."""
    if cell is None:
        return b"\xfb"
    n = len(cell)
    if n < 0xFB:
        head = bytes([n])
    elif n < 1 << 16:
        head = b"\xfc" + n.to_bytes(2, "little")
    elif n < 1 << 24:
        head = b"\xfd" + n.to_bytes(3, "little")
    else:
        head = b"\xfe" + n.to_bytes(8, "little")
    return head + cell


def packets(sequence: int, payload: bytes) -> tuple[bytes, int]:
    """``payload`` as packets (split at 16 MiB - 1, an empty packet after an exact multiple) and
    the next sequence number."""
    out = bytearray()
    at = 0
    while True:
        part = payload[at : at + MAX_PAYLOAD]
        out += len(part).to_bytes(3, "little") + bytes([sequence & 0xFF]) + part
        sequence += 1
        at += len(part)
        if len(part) < MAX_PAYLOAD:
            return bytes(out), sequence & 0xFF


def result_stream(rows: Sequence[Sequence[Cell]], sequence: int = 3, end: bytes = EOF_PAYLOAD) -> bytes:
    """The row packets of ``rows`` followed by ``end`` (an EOF or an ERR payload)."""
    out = bytearray()
    for row in rows:
        data, sequence = packets(sequence, b"".join(lenenc(cell) for cell in row))
        out += data
    data, _ = packets(sequence, end)
    return bytes(out + data)


class Feed:
    """A connection's ``readinto`` over fixed bytes: at most ``step`` bytes per call, 0 at the end
    (what a socket gives when the peer closed it). Asked again after that 0, it fails the test:
    a reader that keeps reading a closed socket would spin forever."""

    def __init__(self, data: bytes, step: int | None = None) -> None:
        self.data = data
        self.at = 0
        self.step = step
        self.ended = False

    def readinto(self, buffer: memoryview) -> int:
        assert not self.ended, "read again after the connection was closed"
        n = min(len(buffer), len(self.data) - self.at, self.step or len(buffer))
        self.ended = n == 0
        buffer[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def as_arrays(parts: list[tuple[int, int, object, object, object]], kind: pa.DataType) -> list[pa.Array]:
    """One ``next_batch`` result as Arrow arrays of ``kind``, each fully validated (offsets in
    bounds, and UTF-8 for ``pa.string()``)."""
    arrays = []
    for rows, nulls, validity, offsets, values in parts:
        buffers = [None if validity is None else pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(values)]
        array = pa.Array.from_buffers(kind, rows, buffers, nulls)
        array.validate(full=True)
        arrays.append(array)
    return arrays


def read_all(
    data: bytes,
    columns: int,
    *,
    kinds: bytes | None = None,
    sequence: int = 3,
    head: int | None = None,
    step: int | None = None,
    batch_rows: int = 1000,
    batch_bytes: int = 1 << 30,
    kind: pa.DataType | None = None,
) -> list[list[pa.Array]]:
    """Every batch of ``data``: its first ``head`` bytes (default: all) handed over as already
    read, the rest read ``step`` bytes at a time."""
    head = len(data) if head is None else head
    feed = Feed(data[head:], step)
    reader = _mysql_rows.RowReader(
        feed.readinto, data[:head], kinds or bytes(columns), sequence, batch_rows, batch_bytes
    )
    batches = []
    for _ in range(len(data) + 2):  # bounded: every batch holds at least one row
        parts = reader.next_batch()
        if parts is None:
            assert reader.finished
            return batches
        assert len(parts) == columns
        batches.append(as_arrays(parts, kind or pa.string()))
    raise AssertionError("next_batch never returned None")


def columns_of(batches: list[list[pa.Array]], columns: int) -> list[pa.Array]:
    return [pa.concat_arrays([b[i] for b in batches]) if batches else pa.array([], pa.string()) for i in range(columns)]


def expected_columns(rows: Sequence[Sequence[Cell]]) -> list[pa.Array]:
    return [pa.array([row[i] for row in rows], pa.string()) for i in range(len(rows[0]))]


# Every length encoding (1 byte up to 250, 0xFC + 2 bytes from 251, 0xFD + 3 bytes from 65536),
# NULL, the empty string, multibyte UTF-8, bytes that look like packet headers.
TEXT_ROWS: list[list[Cell]] = [
    [b"1", b"", None],
    [b"2", "caf\u00e9 \u20ac \U0001f600".encode(), b"x" * 250],
    [b"3", None, b"y" * 251],
    [None, b"\x05\x00\x00\x04\x01abcd", b"z" * 65535],
    [b"6", b"w" * 65536, b"\x00"],
    [b"7", None, None],
]


def test_a_valid_stream_gives_exactly_its_cells_however_the_bytes_arrive() -> None:
    """The socket gives bytes in arbitrary pieces: one read, one byte per read, or a head the
    buffered reader already held followed by reads must all give the same cells."""
    data = result_stream(TEXT_ROWS)
    expected = expected_columns(TEXT_ROWS)
    for head, step in ((None, None), (0, 1), (0, None), (7, 3), (len(data) - 1, 1), (100, 4096)):
        batches = read_all(data, 3, head=head, step=step)
        got = columns_of(batches, 3)
        assert got == expected, (head, step)


def test_batches_hold_at_most_batch_rows_and_about_batch_bytes() -> None:
    data = result_stream(TEXT_ROWS)
    by_rows = read_all(data, 3, batch_rows=2)
    assert [len(b[0]) for b in by_rows] == [2, 2, 2]
    assert columns_of(by_rows, 3) == expected_columns(TEXT_ROWS)
    # A batch ends once its rows' payloads reach batch_bytes: rows 1+2 hold 4 + 267 bytes, rows 3
    # to 5 over 200 each, row 6 the rest.
    by_bytes = read_all(data, 3, batch_bytes=200, step=1)
    assert [len(b[0]) for b in by_bytes] == [2, 1, 1, 1, 1]
    assert columns_of(by_bytes, 3) == expected_columns(TEXT_ROWS)


def test_sequence_numbers_wrap_around_at_256() -> None:
    rows = [[str(i).encode()] for i in range(300)]
    data = result_stream(rows, sequence=250)
    assert columns_of(read_all(data, 1, sequence=250, step=5), 1) == expected_columns(rows)


def test_hex_and_bit_columns_are_backslash_x_hex_and_unsigned_digits() -> None:
    """Binary strings come out as ``\\x`` + lowercase hex, BIT(n) as unsigned decimal digits
    (the contract's two exceptions), computed here with Python's own ``hex`` and ``int``."""
    rows: list[list[Cell]] = [
        [b"\x00\xff\x10\xab", b"\x01"],
        [b"", b"\xff" * 8],
        [None, b"\x01\x00"],
        [bytes(range(256)), None],
        [b"\xfe\x00\x00\x02\x00", b"\x80\x00\x00\x00\x00\x00\x00\x00"],
    ]
    data = result_stream(rows)
    got = columns_of(read_all(data, 2, kinds=bytes([_mysql_rows.HEX, _mysql_rows.BIT]), step=3), 2)
    assert got[0] == pa.array([None if v is None else "\\x" + v.hex() for v in (r[0] for r in rows)])
    assert got[1] == pa.array([None if v is None else str(int.from_bytes(v, "big")) for v in (r[1] for r in rows)])
    assert got[1].to_pylist()[1] == "18446744073709551615"
    # A BIT value longer than 64 bits is not one a server sends.
    with pytest.raises(_mysql_rows.ProtocolError):
        read_all(result_stream([[b"", b"\x01" * 9]]), 2, kinds=bytes([_mysql_rows.HEX, _mysql_rows.BIT]))


def test_rows_longer_than_one_packet_are_joined() -> None:
    """A row payload of 16 MiB - 1 bytes or more continues in the next packets (one more, empty,
    after an exact multiple); the sequence numbers run on through them."""
    exact = b"e" * (MAX_PAYLOAD - 2 - 4)  # "1" + 0xFD length + this = exactly 16 MiB - 1
    assert len(lenenc(b"1") + lenenc(exact)) == MAX_PAYLOAD
    huge = bytes(range(256)) * 66_406 + b"\x7f" * 64  # 17,000,000 bytes: a 0xFE 8-byte length
    rows: list[list[Cell]] = [[b"0", b"before"], [b"1", exact], [b"2", huge], [b"3", b"after"]]
    data = result_stream(rows, sequence=254)
    got = columns_of(read_all(data, 2, sequence=254, kinds=bytes([0, 1]), batch_bytes=8 << 20), 2)
    assert got[0] == pa.array(["0", "1", "2", "3"])
    assert got[1] == pa.array(["\\x" + row[1].hex() for row in rows])
    # Read in pieces that cut the continuation headers, too.
    pieces = columns_of(read_all(data, 2, sequence=254, kinds=bytes([0, 1]), head=10, step=999_983), 2)
    assert pieces == got
    # A continuation packet out of sequence is refused.
    row_2 = (4 + 9) + (4 + MAX_PAYLOAD) + 4  # row 0's packet, row 1's full packet and empty one
    bad = bytearray(data)
    second = row_2 + 4 + MAX_PAYLOAD  # row 2's second packet header
    assert bad[second + 3] == (254 + 4) & 0xFF
    bad[second + 3] ^= 1
    with pytest.raises(_mysql_rows.ProtocolError, match="sequence"):
        read_all(bytes(bad), 2, sequence=254, kinds=bytes([0, 1]))


def test_a_stream_cut_anywhere_is_a_connection_error_never_a_hang() -> None:
    """The connection closes (reads return 0) at every possible byte: the reader says the
    connection ended, whatever it had parsed, and never waits for bytes that cannot come."""
    data = result_stream([*TEXT_ROWS[:3], [b"4", b"\x7f", b"four"]])
    for cut in range(len(data)):
        for head, step in ((cut, None), (0, 1)):
            with pytest.raises(ConnectionError, match="closed the connection"):
                read_all(data[:cut], 3, head=head, step=step, batch_rows=1)


def test_a_packet_out_of_sequence_is_a_protocol_error() -> None:
    data = bytearray(result_stream(TEXT_ROWS[:2]))
    first = 4 + int.from_bytes(data[0:3], "little")  # the second row's header
    data[first + 3] = 9
    with pytest.raises(_mysql_rows.ProtocolError, match="sequence"):
        read_all(bytes(data), 3)
    with pytest.raises(_mysql_rows.ProtocolError, match="sequence"):
        read_all(result_stream(TEXT_ROWS[:2]), 3, sequence=4)  # the first packet already


def test_a_row_that_does_not_match_its_columns_is_a_protocol_error() -> None:
    too_short = packets(3, lenenc(b"1") + lenenc(b"2"))[0] + packets(4, EOF_PAYLOAD)[0]
    with pytest.raises(_mysql_rows.ProtocolError, match="inside column 2"):
        read_all(too_short, 3)
    too_long = packets(3, lenenc(b"1") + lenenc(b"2") + b"!")[0] + packets(4, EOF_PAYLOAD)[0]
    with pytest.raises(_mysql_rows.ProtocolError, match="longer than its 2 columns"):
        read_all(too_long, 2)
    past_the_end = packets(3, b"\xfc\xff\x00abc")[0] + packets(4, EOF_PAYLOAD)[0]  # 255 bytes claimed
    with pytest.raises(_mysql_rows.ProtocolError):
        read_all(past_the_end, 1)


def test_an_err_packet_is_a_server_error_carrying_its_payload_after_the_rows_before_it() -> None:
    data = result_stream(TEXT_ROWS[:3], end=INTERRUPTED)
    feed = Feed(data, step=5)
    reader = _mysql_rows.RowReader(feed.readinto, b"", bytes(3), 3, 2, 1 << 30)
    first = as_arrays(reader.next_batch(), pa.string())
    assert first == expected_columns(TEXT_ROWS[:2])
    with pytest.raises(_mysql_rows.ServerError) as raised:
        reader.next_batch()
    assert raised.value.args == (INTERRUPTED,)
    assert not reader.finished  # the rows did not end: the query failed
    with pytest.raises(_mysql_rows.ProtocolError, match="remaining rows are lost"):
        reader.next_batch()  # never None, which would read as "all rows read"


class Failing(Feed):
    """A connection whose read raises ``error`` once the first ``data`` bytes were read."""

    def __init__(self, data: bytes, error: BaseException) -> None:
        super().__init__(data, step=16)
        self.error = error

    def readinto(self, buffer: memoryview) -> int:
        if self.at == len(self.data):
            raise self.error
        return super().readinto(buffer)


@pytest.mark.parametrize(
    "error",
    [ConnectionResetError(104, "Connection reset by peer"), TimeoutError("timed out"), KeyboardInterrupt()],
    ids=["reset", "timeout", "ctrl-c"],
)
def test_an_error_of_the_connections_read_reaches_the_caller_as_itself(error: BaseException) -> None:
    """A reset connection or a timeout is an ``OSError`` the MySQL reader reports as a lost
    connection, and Ctrl-C (or a run's termination) a ``KeyboardInterrupt`` that must stop the
    run as such: none may turn into some other error on the way out of the reader."""
    data = result_stream(TEXT_ROWS[:2])[:40]
    reader = _mysql_rows.RowReader(Failing(data, error).readinto, b"", bytes(3), 3, 1000, 1 << 30)
    with pytest.raises(type(error)) as raised:
        reader.next_batch()
    assert raised.value is error
    # A caller that retries after a timeout must not take the lost rows' place for the end.
    with pytest.raises(_mysql_rows.ProtocolError, match="remaining rows are lost"):
        reader.next_batch()


_MUTATION_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from tests.sources.test_mysql_row_reader import mutation_outcomes
print(json.dumps(mutation_outcomes({seed}, {count})))
"""


def mutation_outcomes(seed: int, count: int) -> dict[str, int]:
    """Reads ``count`` random mutations of a valid stream; returns how often each outcome came.

    Allowed outcomes: batches whose arrays are structurally valid (offsets within their values),
    or ProtocolError / ConnectionError / ServerError / ValueError. Anything else raises.
    """
    rng = random.Random(seed)
    kinds = bytes([_mysql_rows.TEXT, _mysql_rows.HEX, _mysql_rows.BIT])
    rows: list[list[Cell]] = [
        [b"1", b"\x00\x01", b"\x05"],
        [None, b"", b"\xff" * 8],
        [b"x" * 300, None, None],
        [b"caf\xc3\xa9", b"\xfb\xfc\xfd\xfe\xff", b"\x01\x00"],
        [b"", bytes(range(40)), b"\x00"],
    ]
    valid = result_stream(rows)
    headers = [0]
    while headers[-1] < len(valid):
        headers.append(headers[-1] + 4 + int.from_bytes(valid[headers[-1] : headers[-1] + 3], "little"))
    headers.pop()
    outcomes: dict[str, int] = {}
    for _ in range(count):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            at = rng.randrange(len(data))
            if choice < 0.5:
                data[at] = rng.randrange(256)
            elif choice < 0.65:
                data[at] = rng.choice([0x00, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF])
            elif choice < 0.72:  # a packet length saying "continued in the next packet"
                at = rng.choice(headers)
                data[at : at + 3] = b"\xff\xff\xff"
            elif choice < 0.8:
                data.insert(at, rng.randrange(256))
            elif choice < 0.9:
                del data[at]
            else:
                del data[at:]
                if not data:
                    data = bytearray(b"\x00")
        step = rng.choice([None, 1, 7])
        outcome = "batches"
        feed = Feed(bytes(data[0 if step else len(data) :]), step)
        reader = _mysql_rows.RowReader(feed.readinto, bytes(data[: 0 if step else len(data)]), kinds, 3, 2, 1 << 30)
        for _ in range(len(data) + 2):  # bounded: every batch holds at least one row
            try:
                parts = reader.next_batch()
            except (_mysql_rows.ProtocolError, ConnectionError, _mysql_rows.ServerError, ValueError) as exc:
                outcome = type(exc).__name__
                break
            if parts is None:
                break
            assert len(parts) == 3
            as_arrays(parts, pa.binary())  # raises if an offset points outside its values
        else:
            raise AssertionError("next_batch never returned None")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def test_random_mutations_of_a_valid_stream_fail_cleanly_or_give_valid_batches() -> None:
    """3,000 fixed-seed mutations (bytes changed, inserted, deleted, the stream cut) read in a
    subprocess, so that a read outside a buffer shows as a failed test with its exit status
    instead of taking pytest down."""
    script = _MUTATION_SCRIPT.format(repo=str(REPO), seed=20261206, count=3000)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == 3000
    # The mutations reach every outcome: errors of each kind and intact results.
    assert {"ProtocolError", "ConnectionError", "batches"} <= set(outcomes), outcomes


# ---------------------------------------------------------------------------------------------
# Against the real server


def create_numbers(database: str, rows: int, pad: int = 100) -> None:
    """``t(id, v, s)`` of ``rows`` rows filled by the server (Sequence engine), ~``pad`` bytes each."""
    connection = connect_mariadb(database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20), s VARCHAR(255)) CHARACTER SET utf8mb4")
        cursor.execute(
            f"INSERT INTO t SELECT seq, IF(seq % 7 = 0, NULL, CONCAT('v', seq)), REPEAT(CHAR(97 + seq % 26), {pad}) "
            f"FROM seq_1_to_{rows}"
        )
    connection.close()


def staged_rows(path: Path) -> list[list[str | None]]:
    columns: list[list[str | None]] = []
    for batch in iter_staged_batches(path):
        if not columns:
            columns = [[] for _ in batch.columns]
        for out, column in zip(columns, batch.columns, strict=True):
            out.extend(column.to_pylist())
    return [list(row) for row in zip(*columns, strict=True)]


def assert_same_cells(got: list[list[str | None]], want: list[list[str | None]]) -> None:
    """Cell by cell, reporting where and how they differ (not a diff of megabyte strings)."""
    assert len(got) == len(want), f"{len(got)} rows staged, the server has {len(want)}"
    for r, (a, b) in enumerate(zip(got, want, strict=True)):
        for c, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                where = next((i for i, (p, q) in enumerate(zip(x or "", y or "", strict=False)) if p != q), None)
                raise AssertionError(
                    f"row {r} column {c}: staged {None if x is None else len(x)} chars, server "
                    f"{None if y is None else len(y)}; first difference at {where}: "
                    f"{(x or '')[:40]!r}... vs {(y or '')[:40]!r}..."
                )


def scratch_and_staged(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def processlist_ids(query: str) -> list[int]:
    connection = connect_mariadb()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM information_schema.processlist WHERE info = %s", [query])
        ids = [int(row[0]) for row in cursor.fetchall()]
    connection.close()
    return ids


KILL_QUERY = "SELECT id, v, s FROM t ORDER BY id"


@pytest.mark.parametrize(
    "statement, message",
    [
        ("KILL", r"^lost the MySQL connection while reading rows: "),
        ("KILL QUERY", r"^query failed: \(1317, 'Query execution was interrupted'\)$"),
    ],
)
def test_a_connection_killed_mid_result_is_a_source_error_and_leaves_nothing(
    mariadb_url: URL, tmp_path: Path, statement: str, message: str
) -> None:
    """Another session kills the reading connection (or only its query) after the first batch:
    the rows still in flight must not pass for the whole table. The server's result is ~40 MB,
    far more than the socket buffers hold, so it is still sending when the kill lands."""
    create_numbers(mariadb_url.database, 300_000)
    folder = tmp_path / "staging"
    target = folder / "t.arrow"
    killed: list[int] = []

    def kill_after_the_first_batch(rows: int) -> None:
        if killed:
            return
        (thread,) = processlist_ids(KILL_QUERY)
        connection = connect_mariadb()
        with connection.cursor() as cursor:
            cursor.execute(f"{statement} {thread}")
        connection.close()
        killed.append(rows)

    with pytest.raises(SourceError, match=message):
        extract_to_staging(mariadb_url, KILL_QUERY, target, progress=kill_after_the_first_batch)
    assert killed and killed[0] < 300_000
    assert not target.exists()
    assert scratch_and_staged(folder) == []


_DYING_SCRIPT = """
import sys, time
from pathlib import Path
from osiris_dagster.sources.sql_extract import extract_to_staging

def progress(rows):
    print("staged", rows, flush=True)
    time.sleep(300)  # holds the connection mid-result until the test kills this process

extract_to_staging({url!r}, {query!r}, Path({target!r}), progress=progress)
"""


def test_a_reader_killed_mid_read_releases_the_servers_query(mariadb_url: URL, tmp_path: Path) -> None:
    """``kill -9`` of the reading process after it staged a batch: its socket closes with the
    process, so the server stops sending (no query left running against the source), and no file
    by the target's name appears (only the dead run's scratch file, which names its run)."""
    create_numbers(mariadb_url.database, 300_000, pad=200)
    folder = tmp_path / "staging"
    target = folder / "t.arrow"
    url = mariadb_url.render_as_string(hide_password=False)
    script = _DYING_SCRIPT.format(url=url, query=KILL_QUERY, target=str(target))
    output = tmp_path / "reader.out"
    with output.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not any(name.startswith(".t.arrow.osiris-") for name in scratch_and_staged(folder)):
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "no batch staged within 60 s"
            time.sleep(0.05)
        assert processlist_ids(KILL_QUERY), "the query is not running on the server while the reader is alive"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    deadline = time.monotonic() + 30
    while processlist_ids(KILL_QUERY):
        assert time.monotonic() < deadline, "the server still runs the dead reader's query after 30 s"
        time.sleep(0.1)
    assert not target.exists()
    assert [name for name in scratch_and_staged(folder) if not name.startswith(".t.arrow.osiris-")] == []


@pytest.fixture
def big_packets() -> Iterator[None]:
    """The server's max_allowed_packet at 64 MiB for new connections, restored afterwards."""
    connection = connect_mariadb()
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@GLOBAL.max_allowed_packet")
        ((old,),) = cursor.fetchall()
        cursor.execute(f"SET GLOBAL max_allowed_packet = {64 * 1024 * 1024}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SET GLOBAL max_allowed_packet = {int(old)}")
        connection.close()


@pytest.mark.usefixtures("big_packets")
def test_rows_longer_than_one_packet_are_the_servers_text_on_both_paths(
    mariadb_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 17,000,000-byte LONGBLOB, a 20,000,000-character LONGTEXT (50 MB of UTF-8) and a row of
    exactly 16 MiB - 1 bytes (followed by an empty packet) among small rows: each big row arrives
    as several protocol packets, which must be joined."""
    every_byte = bytes(range(256)).hex()
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT) CHARACTER SET utf8mb4")
        cursor.execute("INSERT INTO big VALUES (1, 0x00ff, 'small'), (4, '', ''), (6, NULL, 'caf\u00e9')")
        cursor.execute(
            f"INSERT INTO big VALUES (2, CONCAT(UNHEX(REPEAT('{every_byte}', 66406)), "
            f"UNHEX(LEFT('{every_byte}', 128))), NULL)"
        )
        cursor.execute("INSERT INTO big VALUES (3, NULL, REPEAT('a\u00e9\u20ac\U0001f600', 5000000))")
        # "5" (2 bytes) + NULL (1) + 0xFD 3-byte length (4) + 16,777,208 bytes: exactly 16 MiB - 1.
        cursor.execute("INSERT INTO big VALUES (5, NULL, REPEAT('z', 16777208))")
        cursor.execute("INSERT INTO big SELECT seq + 10, UNHEX('5C78'), CONCAT('tail ', seq) FROM seq_1_to_100")
        cursor.execute("SELECT LENGTH(b), CHAR_LENGTH(t), LENGTH(t) FROM big WHERE id IN (2, 3) ORDER BY id")
        assert cursor.fetchall() == ((17_000_000, None, None), (None, 20_000_000, 50_000_000))
    connection.close()
    expected = server_text(
        mariadb_url.database, r"SELECT id, CONCAT('\\x', LOWER(HEX(b))) AS b, t FROM big ORDER BY id"
    )
    assert expected[1][1][1][:6] == "\\x0001" and len(expected[1][1][1]) == 2 + 34_000_000

    query = "SELECT id, b, t FROM big ORDER BY id"
    for path in ("fast", "generic"):
        if path == "generic":
            monkeypatch.setenv(FORCE_PATH_ENV, "generic")
        staged = extract_to_staging(mariadb_url, query, tmp_path / f"{path}.arrow")
        assert staged.rows == 106, path
        assert_same_cells(staged_rows(staged.path), expected[1])


def test_two_reads_at_once_each_get_the_whole_table(mariadb_url: URL, tmp_path: Path) -> None:
    """Two threads read the same 100k rows through the fast path at the same time: the reader
    parses with the GIL released, so both parse at once, and each must keep its own state."""
    create_numbers(mariadb_url.database, 100_000, pad=30)
    query = "SELECT id, v, s FROM t ORDER BY id"
    start = threading.Barrier(2, timeout=60)
    results: dict[int, Path] = {}
    errors: list[BaseException] = []

    def read(index: int) -> None:
        try:
            start.wait()
            staged = extract_to_staging(mariadb_url, query, tmp_path / f"r{index}.arrow", batch_rows=1000)
            results[index] = staged.path
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    _, want = server_text(mariadb_url.database, query)
    for index in range(2):
        assert_same_cells(staged_rows(results[index]), want)


def test_a_latin1_connection_gives_the_same_text_without_a_warning(
    mariadb_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``charset=latin1``: the server sends latin1 bytes, which the C reader would hand to Arrow as
    if they were UTF-8, so the reader takes pymysql's path, which decodes them; that is a choice,
    not a failure, so nothing is logged."""
    words = [
        "caf\u00e9",
        "\u00d1and\u00fa",
        "Zo\u00eb",
        "na\u00efve \u00a35 \u00a9 \u00bd",
        "plain",
        None,
        "\u00ff\u00e0",
    ]
    connection = connect_mariadb(mariadb_url.database)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE w (id INT PRIMARY KEY, word VARCHAR(40)) CHARACTER SET utf8mb4")
        cursor.executemany("INSERT INTO w VALUES (%s, %s)", list(enumerate(words)))
    connection.close()
    query = "SELECT id, word FROM w ORDER BY id"
    caplog.set_level("DEBUG")
    utf8 = extract_to_staging(mariadb_url, query, tmp_path / "utf8.arrow")
    latin1 = extract_to_staging(mariadb_url.update_query_dict({"charset": "latin1"}), query, tmp_path / "l1.arrow")
    _, want = server_text(mariadb_url.database, query)
    assert [row[1] for row in want] == words
    assert_same_cells(staged_rows(utf8.path), want)
    assert_same_cells(staged_rows(latin1.path), want)
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []
