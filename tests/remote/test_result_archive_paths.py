"""A remote run's result archive only ever writes project-relative files on the host."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from osiris_dagster.remote.result_archive import UnsafeArchiveError, unpack_result


def _archive(*members: tuple[str, bytes, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.LNKTYPE:
                info.linkname = "project/output/good.csv"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "member",
    [
        ("project/output/../../../escaped.csv", b"x", tarfile.REGTYPE),
        ("project/output/hard", b"", tarfile.LNKTYPE),  # a hard link to another member
        ("project/output/fifo", b"", tarfile.FIFOTYPE),
        ("project", b"x", tarfile.REGTYPE),  # the project folder itself, as a file
        ("C:/windows/escaped.csv", b"x", tarfile.REGTYPE),
    ],
    ids=["dotdot-deep", "hard-link", "fifo", "project-itself", "drive-letter"],
)
def test_member_escaping_the_project_is_refused_before_any_byte_is_written(
    tmp_path: Path, member: tuple[str, bytes, bytes]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(UnsafeArchiveError):
        unpack_result(_archive(("project/output/good.csv", b"a\n", tarfile.REGTYPE), member), project)
    assert _files(tmp_path) == []


def test_member_written_through_a_link_on_the_host_leading_out_is_refused(tmp_path: Path) -> None:
    """The archive is clean, but the host's project has output/ -> a folder outside it."""
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "output").symlink_to(outside, target_is_directory=True)
    archive = _archive(
        ("project/logs/run_1/events.jsonl", b"{}\n", tarfile.REGTYPE), ("project/output/a.csv", b"x", tarfile.REGTYPE)
    )
    with pytest.raises(UnsafeArchiveError, match="outside the project"):
        unpack_result(archive, project)
    assert _files(outside) == [] and not (project / "logs").exists()
