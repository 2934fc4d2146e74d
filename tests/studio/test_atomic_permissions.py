"""Files the service writes for a user to open get the usual permissions: 0666 less the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio import atomic

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    atomic.write_bytes(tmp_path / "turn1.png", b"\x89PNG")
    atomic.write_json(tmp_path / "summary.json", {"a": 1})
    assert mode(tmp_path / "turn1.png") == 0o644 and mode(tmp_path / "summary.json") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "turn1.png"]  # no temporary left


def test_a_failed_write_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_bytes(tmp_path / "x.png", b"data")
    assert list(tmp_path.iterdir()) == []
