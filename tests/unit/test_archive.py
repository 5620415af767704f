"""A page's pyramid in one PMTiles archive (planzoom.engines.archive): the
same tiles as the file layout, written in parts, read by byte ranges, and
readable by the pmtiles package's own reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import zstandard
from pmtiles.reader import MemorySource, Reader

from planzoom.dzi import DziInfo, tile_name
from planzoom.engines.archive import (
    MIN_PART_BYTES,
    ArchiveIndex,
    ArchiveWriter,
    tile_id,
)
from planzoom.engines.pyramid import cut_pyramid, save_pyramid
from planzoom.engines.raster import raster_rows


def _rows(image: np.ndarray):
    data = zstandard.ZstdCompressor().compress(image.tobytes())
    h, w, bands = image.shape
    return raster_rows(io.BytesIO(data), w, h, bands)


def _archive(image: np.ndarray, part_bytes: int = MIN_PART_BYTES):
    """(archive bytes, Written, parts emitted) of ``image``'s pyramid."""
    h, w, bands = image.shape
    parts: dict[int, bytes] = {}
    writer = ArchiveWriter(DziInfo(w, h, 256, 1, "jpg"), parts.__setitem__, part_bytes)
    cut_pyramid(_rows(image), w, h, bands, 256, 1, 90, writer.add)
    written = writer.finish()
    whole = written.head + b"".join(parts[n] for n in sorted(parts))
    assert sorted(parts) == list(range(2, 2 + written.parts))
    assert len(whole) == written.size
    return whole, written, parts


def _read(data: bytes):
    return lambda offset, length: data[offset:offset + length]


def test_an_archive_holds_the_same_tiles_as_the_files(tmp_path: Path):
    rng = np.random.default_rng(7)
    image = np.full((700, 1600, 3), 255, np.uint8)  # blank paper right of x = 700
    image[100:600, 200:700] = rng.integers(0, 255, (500, 500, 3), np.uint8)
    whole, written, parts = _archive(image)
    assert written.parts == 0 and not parts, "a small pyramid is one object"
    info = save_pyramid(_rows(image), 1600, 700, 3, str(tmp_path), "p", 256, 1, 90)
    index = ArchiveIndex.parse(whole[:16384], _read(whole))
    assert (index.dzi.width, index.dzi.height, index.dzi.overlap) == (1600, 700, 1)
    files = tmp_path / "p_files"
    count = 0
    for level in range(info.levels):
        cols, rows = info.grid(level)
        for col in range(cols):
            for row in range(rows):
                offset, length = index.locate(level, col, row, _read(whole))
                expected = (files / tile_name(level, col, row, "jpg")).read_bytes()
                assert whole[offset:offset + length] == expected
                count += 1
    assert count == written.tiles == info.tile_count()
    assert written.stored < written.tiles, "the blank tiles are stored once"
    assert index.locate(info.levels, 0, 0, _read(whole)) is None
    assert index.locate(info.levels - 1, 99, 0, _read(whole)) is None
    # Any PMTiles reader opens it: the package's own, by z/x/y.
    reader = Reader(MemorySource(whole))
    top = info.levels - 1
    assert reader.get(top, 2, 1) == (files / f"{top}/2_1.jpg").read_bytes()
    assert reader.header()["max_zoom"] == top


def test_a_large_pyramid_goes_out_in_parts_and_reads_back_whole():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 255, (2400, 2400, 3), np.uint8)  # noise: ~10 MB of JPEG
    whole, written, parts = _archive(image)
    assert written.parts >= 1 and all(len(p) == MIN_PART_BYTES for n, p in parts.items()
                                      if n < 1 + written.parts)
    assert len(written.head) >= MIN_PART_BYTES, "part 1 holds the head and held-back tiles"
    index = ArchiveIndex.parse(whole[:16384], _read(whole))
    seen = {(level, col, row): (offset, length)
            for level, col, row, offset, length in index.tiles(_read(whole))}
    assert len(seen) == written.tiles
    for (level, col, row), (offset, length) in list(seen.items())[::37]:
        assert index.locate(level, col, row, _read(whole)) == (offset, length)
        assert whole[offset:offset + 3] == b"\xff\xd8\xff", "a JPEG starts there"


def test_leaf_directories_are_fetched_once_and_kept():
    info = DziInfo(40_000, 30_000, 256, 1, "jpg")
    parts: dict[int, bytes] = {}
    writer = ArchiveWriter(info, parts.__setitem__, MIN_PART_BYTES)
    for level in range(info.levels):
        cols, rows = info.grid(level)
        for col in range(cols):
            for row in range(rows):
                writer.add(level, col, row, tile_id(level, col, row).to_bytes(8, "big"))
    written = writer.finish()
    whole = written.head + b"".join(parts[n] for n in sorted(parts))
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return whole[offset:offset + length]

    index = ArchiveIndex.parse(whole[:16384], read)
    assert index.header["leaf_directory_length"] > 0, "this many tiles need leaves"
    top = info.levels - 1
    for col, row in ((0, 0), (150, 100), (156, 117)):
        offset, length = index.locate(top, col, row, read)
        assert whole[offset:offset + length] == tile_id(top, col, row).to_bytes(8, "big")
    fetched = len(reads)
    assert 1 <= fetched <= 3
    index.locate(top, 150, 100, read)
    assert len(reads) == fetched, "a leaf directory is fetched once"
