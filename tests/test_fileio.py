"""Atomic writes: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdk.fileio import atomic_path, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path: Path):
    target = tmp_path / "sub" / "result.md"
    write_text_atomic(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["result.md"]  # no temporary file left behind


def test_atomic_write_uses_umask_permissions(tmp_path: Path):
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
