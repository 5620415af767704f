"""Scratch space: the volume's budget, not only the file system's free
bytes, decides what fits, and the source cache makes room before it
refuses."""

from __future__ import annotations

import asyncio
import os

import pytest

from planzoom.config import Settings, quantity_bytes
from planzoom.scratch import Scratch, ScratchFull, tree_bytes
from planzoom.sources import SUFFIX, SourceCache


def test_quantities_are_read_as_kubernetes_writes_them():
    assert quantity_bytes("4Gi") == 4 * 2**30
    assert quantity_bytes("500M") == 500_000_000
    assert quantity_bytes("1024") == 1024
    assert Settings(scratch_bytes="2Mi").scratch_bytes == 2 * 2**20
    for bad in ("4 GB", "Gi", "-1", "1.5Gi"):
        with pytest.raises(ValueError):
            quantity_bytes(bad)


def test_the_budget_counts_every_file_under_the_volume(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").write_bytes(b"x" * 3000)
    (tmp_path / "two").write_bytes(b"x" * 1000)
    os.symlink("/usr", tmp_path / "link")  # not followed
    assert tree_bytes(str(tmp_path)) == 4000
    scratch = Scratch(str(tmp_path), budget=10_000)
    assert scratch.free() == 6000
    scratch.need(6000, "this")
    with pytest.raises(ScratchFull) as refused:
        scratch.need(6001, "the upload")
    assert refused.value.reason == "SCRATCH_FULL" and refused.value.retryable
    assert "the upload needs 6,001 bytes" in refused.value.message
    # No budget: only the file system's free bytes count.
    assert Scratch(str(tmp_path)).free() > 10_000


class _Store:
    """A bucket of one object of ``size`` bytes."""

    def __init__(self, size: int):
        self.object_size = size

    def size(self, key: str) -> int:
        return self.object_size

    def download_file(self, key: str, path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"%" * self.object_size)


def test_the_source_cache_evicts_to_make_room_then_refuses(tmp_path):
    for i, name in enumerate(("old", "older")):
        path = tmp_path / f"{name}{SUFFIX}"
        path.write_bytes(b"x" * 4000)
        os.utime(path, (1000 - i, 1000 - i))
    cache = SourceCache(_Store(5000), str(tmp_path), Scratch(str(tmp_path), budget=10_000))
    path = asyncio.run(cache.path("sources/new.pdf", "f" * 64))
    assert os.path.getsize(path) == 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{'f' * 64}{SUFFIX}", f"old{SUFFIX}"]
    too_big = SourceCache(_Store(20_000), str(tmp_path), Scratch(str(tmp_path), budget=10_000))
    with pytest.raises(ScratchFull):
        asyncio.run(too_big.path("sources/huge.pdf", "e" * 64))
    assert len(list(tmp_path.iterdir())) == 2, "nothing evicted in vain, nothing half-written"
