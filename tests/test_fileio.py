"""fileio: atomic writes keep the old file on failure, refuse folders, and honour the umask."""
from __future__ import annotations

import errno
import os

import pytest

from bsadvisor.core import fileio
from bsadvisor.core.errors import UserError


def test_write_atomic_gives_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        p = fileio.write_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o640


def test_destination_that_is_a_folder_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        fileio.check_destination(tmp_path, "--out")
    with pytest.raises(UserError, match="does not exist"):
        fileio.write_atomic(tmp_path / "no" / "a.json", "{}")


def test_disk_full_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "plan.json"
    target.write_text("old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(UserError, match="No space left on device.*free some space"):
        fileio.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
