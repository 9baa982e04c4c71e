"""Atomic outputs: a failed write keeps the old file and says why in one line."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from merbench.atomic import atomic_path, os_error, write_text
from merbench.errors import DataError


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    write_text(target, "good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("unexpected pos 123")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_disk_full_inside_a_writer_is_named(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    write_text(target, "good")

    def torch_like_save(path: Path) -> None:  # torch wraps the OSError in a RuntimeError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from exc

    with pytest.raises(DataError, match=r"cannot write .*model\.pt: the disk is full"):
        with atomic_path(target) as tmp:
            torch_like_save(tmp)
    assert target.read_text() == "good"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(DataError, match="permission denied"):
            write_text(folder / "t.md", "x")
    finally:
        folder.chmod(0o700)


def test_os_error_messages() -> None:
    assert "read-only" in str(os_error("/x", OSError(errno.EROFS, "Read-only file system")))
    assert "disk is full" in str(os_error("/x", OSError(errno.ENOSPC, "No space")))
