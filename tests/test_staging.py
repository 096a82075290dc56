"""A staged file's batches can be read back while it is still being written, and after it is committed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from osiris_dagster.staging import StagedBatchReader, iter_staged_batches, open_staged, staged_file, text_schema


def test_each_batch_reads_back_from_the_file_being_written_byte_for_byte(tmp_path: Path) -> None:
    schema = text_schema([("id", "INT"), ("label", "VARCHAR(20)")], "mysql")
    written = [
        pa.RecordBatch.from_arrays(
            [
                pa.array([str(i * 10 + j) for j in range(n)]),
                pa.array([f'é, "{i}"\n' if j % 3 else None for j in range(n)]),
            ],
            schema=schema,
        )
        for i, n in enumerate([5, 1, 7000, 3])
    ]
    target = tmp_path / "run-1.arrow"
    read_back = []
    with staged_file(target, schema) as staged:
        reader = None
        for batch in written:
            where = staged.write(batch)
            assert where is not None and where.rows == batch.num_rows
            reader = reader or StagedBatchReader(where.path, schema)
            # The first batch shares its bytes with the schema message: every batch must still read alone.
            read_back.append(reader.read(where))
        assert staged.write(written[0].slice(0, 0)) is None  # an empty batch is not staged
    assert reader is not None
    assert [b.to_pylist() for b in read_back] == [b.to_pylist() for b in written]
    assert all(b.schema.equals(schema, check_metadata=True) for b in read_back)
    assert reader.read(where).to_pylist() == written[-1].to_pylist()  # still readable once renamed
    reader.close()
    assert open_staged(target).rows == sum(b.num_rows for b in written)
    assert [b.to_pylist() for b in iter_staged_batches(target)] == [b.to_pylist() for b in written]
