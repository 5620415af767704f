"""The raster a page travels as from render to tile
(``RASTER_ENCODING_RAW_ZSTD`` in events.proto): one zstd frame of
row-major, interleaved 8-bit samples, top row first, ``width * height *
bands`` bytes once decompressed; one band for grey (a page with no colour),
three for RGB.

:func:`raster_writer` writes one, :func:`raster_rows` reads it back in
blocks of whole rows; :class:`Raster` is what an engine that wrote one
(:mod:`planzoom.engines.pdf`, :mod:`planzoom.engines.image`) says about it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from planzoom.engines.sandbox import sandbox_result
from planzoom.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import zstandard

#: Bytes of raster rows decompressed and fed to the pyramid at once.
BLOCK_BYTES = 8 * 1024 * 1024


class RasterUnreadable(InvalidInput):
    """The raster is not what its TileJob says (size, encoding)."""

    reason = "RASTER_UNREADABLE"


@sandbox_result
@dataclass(frozen=True)
class Raster:
    """A page's raster as written: its size in pixels, its bands (1 = grey,
    3 = RGB), its compressed size in bytes, and the words read beside it
    (-1: none were read, e.g. an image page)."""

    width_px: int
    height_px: int
    bands: int
    raster_bytes: int
    words: int = -1
    #: sha256 (hex) of the raster as written (:class:`RasterSink`).
    digest: str = ""


class RasterSink:
    """Where a raster's rows go: compressed into the file, whose bytes are
    hashed on their way, so that ``digest`` (sha256 of the raster's zstd
    frame, hex) tells an unchanged page from a revised one without reading
    it again. The frame is a function of the samples (zstd is deterministic
    for one version, level and sequence of writes: rows in the same bands),
    and hashing it costs a tenth of hashing the samples."""

    def __init__(self, z: zstandard.ZstdCompressionWriter, hashed: _Hashed):
        self._z, self._hashed = z, hashed
        self.write = z.write

    @property
    def digest(self) -> str:
        return self._hashed.hash.hexdigest()


class _Hashed:
    """A file whose written bytes are hashed too."""

    def __init__(self, f: BinaryIO):
        self.f, self.hash = f, hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def raster_writer(path: str) -> Iterator[RasterSink]:
    """A stream to write a raster's rows to, at ``path``: one zstd frame
    (level 1: the raster lives for seconds, between render and tile). Its
    ``digest`` is final once the block ends."""
    import zstandard

    with open(path, "wb") as f:
        hashed = _Hashed(f)
        with zstandard.ZstdCompressor(level=1).stream_writer(hashed, closefd=False) as z:
            sink = RasterSink(z, hashed)
            yield sink
            z.flush(zstandard.FLUSH_FRAME)


def raster_rows(stream: BinaryIO, width: int, height: int, bands: int,
                block_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Decompress a RASTER_ENCODING_RAW_ZSTD raster (one zstd frame of
    ``height`` rows of ``width`` x ``bands`` 8-bit samples) from ``stream``
    and yield it in blocks of whole rows, arrays of shape (rows, width,
    bands). Raises RasterUnreadable if the stream is not zstd or does not
    hold exactly ``height`` rows."""
    import numpy as np
    import zstandard

    row_bytes = width * bands
    want = max(1, block_bytes // row_bytes) * row_bytes
    seen = 0
    partial = 0  # bytes of a row the frame ended in
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(stream)
        while True:
            # Each block is a fresh buffer the pyramid may keep views of; the
            # frame is decompressed straight into it. ``want`` is whole rows,
            # so only the frame's end leaves a block short.
            block = np.empty(want, np.uint8)  # not zeroed first: it is overwritten
            filled = 0
            while filled < want and (n := reader.readinto(block[filled:])):
                filled += n
            rows = filled // row_bytes
            partial = filled - rows * row_bytes
            if rows:
                seen += rows
                if seen > height:
                    raise RasterUnreadable(
                        f"raster holds more than the {height} rows expected")
                yield block[: rows * row_bytes].reshape(rows, width, bands)
            if filled < want:
                break
    except zstandard.ZstdError as e:
        raise RasterUnreadable(f"raster is not a valid zstd stream: {e}") from None
    if seen != height or partial:
        raise RasterUnreadable(
            f"raster holds {seen} rows and {partial} bytes, expected {height} rows "
            f"of {row_bytes} bytes")
