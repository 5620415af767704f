"""Raw raster rows → DZI pyramid tiles, streamed: tiles come out while the
raster is still being read, so they can be uploaded while the rest is cut.

The pyramid is the one libvips ``dzsave`` builds with ``layout=dz``,
``depth=onepixel`` and the default ``region_shrink=mean`` (the DZI format;
see :mod:`planzoom.dzi` for the level and tile arithmetic): level ``l - 1``
is level ``l`` halved with a rounded 2x2 mean, an odd last row or column
being paired with a copy of itself, down to 1x1 pixel. Tiles are
``tile_size`` pixels plus ``overlap`` on each inner edge. For the same
raster the tiles decode to the same pixels as ``dzsave``'s (checked in
``tests/test_units.py``).

Memory: every level keeps at most one tile row (``tile_size + 2*overlap``
rows of its width) plus the block being fed, so a page's peak is about
``2 * (tile_size + 2*overlap + block rows) * width * bands`` bytes whatever
its height — about 60 MB for a 36 in wide RGB sheet at 600 DPI with the
default block.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import cv2
import numpy as np
import simplejpeg

from planzoom.dzi import DziInfo, dzi_xml, level_count, level_size, tile_name
from planzoom.errors import InvalidInput

#: ``emit(level, col, row, pieces)``: the tile's pixels are the (rows,
#: width, bands) uint8 views in ``pieces`` stacked top to bottom; they are
#: never written to afterwards.
TileSink = Callable[[int, int, int, tuple[np.ndarray, ...]], None]


class TileEncodingFailed(InvalidInput):
    """The JPEG encoder refused a tile; the same pixels will fail again."""

    reason = "TILE_ENCODING_FAILED"


def shrink(rows: np.ndarray) -> np.ndarray:
    """Halve an even number of rows: (2k, w, b) → (k, ceil(w/2), b), each
    pixel the rounded mean ``(a + b + c + d + 2) >> 2`` of a 2x2 block; an
    odd last column is paired with a copy of itself (as ``dzsave`` does).

    OpenCV's INTER_AREA resize at exactly half size is that rounded mean
    (its 2x2 fast path), in SIMD and with the GIL released; the odd column,
    ``(top + bottom + 1) >> 1``, is done apart so nothing is copied."""
    k2, w, bands = rows.shape
    even = w & ~1
    out = np.empty((k2 // 2, -(-w // 2), bands), np.uint8)
    if even:
        src = rows[:, :even] if bands > 1 else rows[:, :even, 0]
        half = cv2.resize(src, (even // 2, k2 // 2), interpolation=cv2.INTER_AREA)
        out[:, : even // 2] = half.reshape(k2 // 2, even // 2, bands)
    if w & 1:
        last = rows[:, -1].astype(np.uint16)
        out[:, -1] = (last[0::2] + last[1::2] + 1) >> 1
    return out


class _Level:
    __slots__ = ("width", "height", "parts", "top", "next_row", "unpaired")

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        # Consecutive blocks of this level's rows, as fed (never copied
        # together): parts[0] starts at row ``top``.
        self.parts: list[np.ndarray] = []
        self.top = 0
        self.next_row = 0  # next tile row to cut
        self.unpaired: np.ndarray | None = None  # a row waiting for its pair below

    def rows_held(self) -> int:
        return self.top + sum(len(p) for p in self.parts)

    def pieces(self, y0: int, y1: int) -> tuple[np.ndarray, ...]:
        """Views of rows y0 .. y1 (all held), one per part they fall in."""
        out, at = [], self.top
        for part in self.parts:
            lo, hi = max(y0, at), min(y1, at + len(part))
            if lo < hi:
                out.append(part[lo - at : hi - at])
            at += len(part)
        return tuple(out)

    def drop_before(self, row: int) -> None:
        """Forget the rows above ``row``."""
        while self.parts and self.top + len(self.parts[0]) <= row:
            self.top += len(self.parts.pop(0))
        if self.parts and self.top < row:
            self.parts[0] = self.parts[0][row - self.top :]
            self.top = row


class PyramidBuilder:
    """Cut a ``width`` x ``height`` raster, fed top to bottom in blocks of
    rows, into DZI tiles of every level; each tile goes to ``emit`` as soon
    as every pixel it covers is known. Levels run from 0 (1x1) to
    ``levels - 1`` (full resolution).

    No row is copied to cut a tile: ``emit`` gets the tile as one or more
    views (the blocks of rows it straddles), to stack top to bottom, e.g.
    with ``np.concatenate`` where the tile is encoded."""

    def __init__(self, width: int, height: int, bands: int, tile_size: int, overlap: int,
                 emit: TileSink):
        self.levels = level_count(width, height)
        self._level = [_Level(*level_size(width, height, lv)) for lv in range(self.levels)]
        self.bands, self.tile_size, self.overlap = bands, tile_size, overlap
        self._emit = emit

    def feed(self, rows: np.ndarray) -> None:
        """The next rows of the full-resolution raster, shape (n, width, bands)."""
        self._feed(self.levels - 1, rows)

    def finish(self) -> None:
        """Flush every level; call once after the last row."""
        for lv in range(self.levels - 1, 0, -1):
            level = self._level[lv]
            if level.unpaired is not None:  # odd height: the last row pairs with itself
                last, level.unpaired = level.unpaired, None
                self._feed(lv - 1, shrink(np.concatenate([last, last])))
        for lv, level in enumerate(self._level):
            rows = -(-level.height // self.tile_size)
            if level.next_row != rows:
                raise RuntimeError(f"level {lv}: {level.next_row} of {rows} tile rows cut")

    def _feed(self, lv: int, rows: np.ndarray) -> None:
        level = self._level[lv]
        if not len(rows):
            return
        level.parts.append(rows)
        if lv > 0:
            start = 0
            if level.unpaired is not None:  # its pair is this block's first row
                self._feed(lv - 1, shrink(np.concatenate([level.unpaired, rows[:1]])))
                level.unpaired, start = None, 1
            even = (len(rows) - start) & ~1
            if even:
                self._feed(lv - 1, shrink(rows[start : start + even]))
            if start + even < len(rows):
                level.unpaired = rows[-1:]
        self._cut(lv, level)

    def _cut(self, lv: int, level: _Level) -> None:
        ts, ov = self.tile_size, self.overlap
        rows = -(-level.height // ts)
        cols = -(-level.width // ts)
        while level.next_row < rows:
            r = level.next_row
            y0, y1 = max(0, r * ts - ov), min(level.height, (r + 1) * ts + ov)
            if level.rows_held() < y1:
                return
            pieces = level.pieces(y0, y1)
            for c in range(cols):
                x0, x1 = max(0, c * ts - ov), min(level.width, (c + 1) * ts + ov)
                self._emit(lv, c, r, tuple(p[:, x0:x1] for p in pieces))
            level.next_row += 1
            level.drop_before(max(0, (r + 1) * ts - ov))  # the next tile row starts here


class JpegEncoder:
    """JPEG tiles with libjpeg-turbo straight from numpy (simplejpeg): no
    image object per tile, and the GIL is released while a tile is
    encoded, so encoder threads run on every core. The same choices as
    libvips' ``jpegsave`` (which cut the tiles before): baseline, accurate
    DCT, no metadata, chroma at full resolution from quality 90 up and
    4:2:0 below, grey tiles as one-component JPEGs. A tile of pure white
    (every sample 255) is encoded once per tile size and its bytes reused:
    on line-art sheets most full-resolution tiles are white."""

    def __init__(self, quality: int):
        self.quality = quality
        self._subsampling = "444" if quality >= 90 else "420"
        self._white: dict[tuple[int, int, int], bytes] = {}

    def encode(self, pixels: np.ndarray) -> bytes:
        """``pixels``: (height, width, bands) uint8, rows at any stride (a
        view into a wider block is encoded in place) → JPEG bytes."""
        if pixels.min() == 255:
            shape = pixels.shape
            data = self._white.get(shape)
            if data is None:
                data = self._white[shape] = self._jpeg(pixels)
            return data
        return self._jpeg(pixels)

    def _jpeg(self, pixels: np.ndarray) -> bytes:
        grey = pixels.shape[2] == 1
        try:
            return simplejpeg.encode_jpeg(
                pixels, quality=self.quality, colorspace="GRAY" if grey else "RGB",
                colorsubsampling="Gray" if grey else self._subsampling)
        except (ValueError, RuntimeError) as e:
            raise TileEncodingFailed(f"libjpeg-turbo could not encode a tile: {e}") from None


#: ``store(level, col, row, jpeg)``: keep one tile. Returns None once the
#: tile is kept, or a Future that is done when it is (an upload still in
#: flight).
TileStore = Callable[[int, int, int, bytes], "Future | None"]


class _InFlight:
    """Tiles being encoded or stored: at most ``limit`` at once (a tile's
    slot is freed when it is kept, or when one of its steps fails), first
    error kept."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self.failures: list[BaseException] = []

    def acquire(self) -> None:
        if self.failures:
            raise self.failures[0]
        self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def track(self, future: Future, holds_slot: bool) -> None:
        """Wait for ``future`` in :meth:`drain`; free the tile's slot when it
        ends if ``holds_slot`` (its last step), or whenever it fails."""
        with self._lock:
            self._pending.add(future)

        def done(f: Future) -> None:  # also runs for a future its pool cancelled
            with self._lock:
                self._pending.discard(f)
                if f.cancelled():
                    self.failures.append(RuntimeError("tile work was cancelled: the pool "
                                                      "shut down"))
                elif f.exception() is not None:
                    self.failures.append(f.exception())
            if holds_slot or f.cancelled() or f.exception() is not None:
                self._slots.release()

        future.add_done_callback(done)

    def drain(self) -> None:
        """Wait until nothing is pending (later steps may add futures)."""
        while True:
            with self._lock:
                waiting = list(self._pending)
            if not waiting:
                return
            wait(waiting)


def cut_pyramid(blocks: Iterable[np.ndarray], width: int, height: int, bands: int,
                tile_size: int, overlap: int, quality: int, store: TileStore,
                encode_threads: int | None = None, max_in_flight: int = 256,
                check: Callable[[], None] | None = None) -> DziInfo:
    """Cut the raster given as blocks of rows (see :func:`planzoom.engines.raster.raster_rows`) into
    a JPEG DZI pyramid while the next rows are read: tiles are encoded by
    ``encode_threads`` threads (default: one per CPU core; more only fight
    over the GIL) and each is handed to ``store``, which may keep it at once
    or return a Future (e.g. a PUT, see :mod:`services.tile.put_pool`, or a
    part of an archive, :mod:`planzoom.engines.archive`).
    At most ``max_in_flight`` tiles are being encoded or stored at once
    (back-pressure: a slow store slows the reading, memory stays bounded).

    ``check()`` runs between blocks and may raise to stop early (e.g. the job
    was cancelled). The first error of a store, of the raster or of
    ``check`` is raised once the tiles already handed out are done.
    Returns the descriptor (not stored here: the caller stores it last).
    """
    encoder = JpegEncoder(quality)
    flight = _InFlight(max_in_flight)

    def encode(level: int, col: int, row: int, pieces: tuple[np.ndarray, ...]) -> None:
        # Stacked here, on an encoder thread: the feeding thread copies nothing.
        pixels = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        stored = store(level, col, row, encoder.encode(pixels))
        if stored is None:
            flight.release()
        else:
            flight.track(stored, holds_slot=True)

    with ThreadPoolExecutor(encode_threads or os.cpu_count() or 1,
                            thread_name_prefix="tile-encode") as encoders:

        def emit(level: int, col: int, row: int, pieces: tuple[np.ndarray, ...]) -> None:
            flight.acquire()
            flight.track(encoders.submit(encode, level, col, row, pieces), holds_slot=False)

        builder = PyramidBuilder(width, height, bands, tile_size, overlap, emit)
        try:
            for block in blocks:
                if check is not None:
                    check()
                builder.feed(block)
            builder.finish()
        finally:
            flight.drain()  # errors are collected in ``flight.failures``
    if flight.failures:
        raise flight.failures[0]
    return DziInfo(width=width, height=height, tile_size=tile_size, overlap=overlap,
                   format="jpg")


def save_pyramid(blocks: Iterable[np.ndarray], width: int, height: int, bands: int,
                 out_dir: str, name: str, tile_size: int, overlap: int, quality: int,
                 encode_threads: int | None = None) -> DziInfo:
    """:func:`cut_pyramid` to local disk, in ``dzsave``'s layout:
    ``<out_dir>/<name>.dzi`` and ``<out_dir>/<name>_files/<level>/<col>_<row>.jpg``."""
    files = os.path.join(out_dir, f"{name}_files")
    for level in range(level_count(width, height)):
        os.makedirs(os.path.join(files, str(level)), exist_ok=True)

    def store(level: int, col: int, row: int, data: bytes) -> None:
        with open(os.path.join(files, tile_name(level, col, row, "jpg")), "wb") as f:
            f.write(data)

    info = cut_pyramid(blocks, width, height, bands, tile_size, overlap, quality, store,
                       encode_threads=encode_threads)
    with open(os.path.join(out_dir, f"{name}.dzi"), "wb") as f:
        f.write(dzi_xml(info))
    return info
