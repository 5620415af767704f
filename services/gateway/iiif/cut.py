"""Cutting an IIIF image request out of a page's stored DZI pyramid,
never by rendering its source again.

A :class:`~planzoom.iiif.Plan` is answered from the smallest pyramid level
whose pixels cover the output (:func:`planzoom.iiif.source`): only the
tiles under the region are read, all at once on the event loop (layout
FILES: one object per tile through the gateway's
:class:`~planzoom.store_reader.AsyncReader`; layout ARCHIVE: one range GET of
the page's archive through :class:`~services.gateway.archives.Archives`,
which keeps directories and recent tiles), then :func:`compose` runs in a
thread: each tile decoded (libjpeg-turbo through simplejpeg), its overlap
cropped, pasted into a canvas the size of the region at that level, and
pyvips resizes it to the exact output size, mirrors and rotates it,
converts its quality and encodes it. Memory is the canvas (at most
:attr:`Iiif.canvas_pixels <services.gateway.iiif.image.Iiif>`, about twice the output) and the
output: a level is never decoded whole.

A request exactly on one stored tile (its region and size the tile's,
overlap included, format the pyramid's, quality default or color, no
rotation) is answered with the stored bytes and no decoding.

Cuts run ``PLANZOOM_IIIF_MAX_CONCURRENT_REGIONS`` at once per gateway;
``PLANZOOM_IIIF_MAX_WAITING_REGIONS`` more wait up to
``PLANZOOM_IIIF_REGION_WAIT_SECONDS``; one org holds at most half of
those, running or waiting; beyond, 503 ``REGIONS_BUSY`` with
``Retry-After`` (:class:`Regions`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pyvips
import simplejpeg

from planzoom.dzi import DziInfo, parse_dzi, tile_name
from planzoom.errors import Internal, NotFound, Unavailable
from planzoom.iiif import Plan, Source, pieces
from planzoom.keys import ARCHIVE_SUFFIX, page_name
from planzoom.storage import ObjectNotFound

#: Seconds a refused cut is told to wait (``Retry-After``).
RETRY_AFTER_SECONDS = 1.0
#: Pages whose descriptors are kept (a page's never changes once written).
DESCRIPTORS_KEPT = 4096


class RegionsBusy(Unavailable):
    reason = "REGIONS_BUSY"


class TileMissing(Internal):
    """A tile a finished page's descriptor promises is not in the bucket."""


class Regions:
    """At most ``running`` cuts at once; ``waiting`` more wait their turn
    for up to ``wait_seconds``; one org holds at most half of ``running +
    waiting`` (at least one), so one org's viewers cannot take every slot
    from the others; beyond that, or after the wait, RegionsBusy (503 with
    ``Retry-After``). One per gateway, used on its event loop."""

    def __init__(self, running: int, waiting: int, wait_seconds: float):
        self.running, self.waiting, self.wait_seconds = running, waiting, wait_seconds
        self.per_org = max(1, (running + waiting) // 2)
        self._free = asyncio.Semaphore(running)
        self._queued = 0
        self._by_org: Counter[str] = Counter()

    def _busy(self, why: str) -> RegionsBusy:
        return RegionsBusy(f"{why}; retry in {RETRY_AFTER_SECONDS:g} s (or ask the operator "
                           "to raise PLANZOOM_IIIF_MAX_CONCURRENT_REGIONS)",
                           retry_after=RETRY_AFTER_SECONDS)

    @contextlib.asynccontextmanager
    async def slot(self, org: str = "") -> AsyncIterator[None]:
        """Hold one of the ``running`` slots for the block, for ``org``."""
        if self._by_org[org] >= self.per_org:
            raise self._busy(f"org {org!r} has {self.per_org} IIIF regions being cut or "
                             "waiting, its share of this gateway")
        self._by_org[org] += 1
        try:
            if self._free.locked():
                if self._queued >= self.waiting:
                    raise self._busy(f"this gateway is cutting {self.running} IIIF regions "
                                     f"and {self._queued} more wait")
                self._queued += 1
                try:
                    await asyncio.wait_for(self._free.acquire(), self.wait_seconds)
                except TimeoutError:
                    raise self._busy(f"no IIIF region slot came free in "
                                     f"{self.wait_seconds:g} s") from None
                finally:
                    self._queued -= 1
            else:
                await self._free.acquire()
            try:
                yield
            finally:
                self._free.release()
        finally:
            self._by_org[org] -= 1
            if not self._by_org[org]:
                del self._by_org[org]


@dataclass(frozen=True)
class Page:
    """A page's pyramid: its descriptor and where its tiles are (``key``:
    its archive, or its ``_files/`` prefix)."""

    dzi: DziInfo
    key: str
    archive: bool


class Pages:
    """Pages' descriptors, kept by key (they never change once written)."""

    def __init__(self, kept: int = DESCRIPTORS_KEPT):
        self.kept = kept
        self._dzi: OrderedDict[str, DziInfo] = OrderedDict()

    async def page(self, gw, tiles_prefix: str, archive: bool, page: int) -> Page | None:
        """Page ``page`` (1-based) of the job whose outputs are under
        ``tiles_prefix``, or None while it is not done (or the job has no
        such page)."""
        name = f"{tiles_prefix}{page_name(page)}"
        if archive:
            key = f"{name}.{ARCHIVE_SUFFIX}"
            try:
                return Page((await gw.archives.index(key)).dzi, key, True)
            except ObjectNotFound:
                return None
        dzi = self._dzi.get(name)
        if dzi is None:
            try:
                data, _, _ = await gw.reader.get_if_changed(f"{name}.dzi", None)
            except ObjectNotFound:
                return None
            dzi = self._dzi[name] = parse_dzi(data)
            while len(self._dzi) > self.kept:
                self._dzi.popitem(last=False)
        self._dzi.move_to_end(name)
        return Page(dzi, f"{name}_files/", False)


async def tile(gw, page: Page, level: int, col: int, row: int) -> bytes:
    """The stored bytes of tile (col, row) at ``level``, as the DZI tile
    route reads them in either layout. Raises TileMissing."""
    if page.archive:
        found = await gw.archives.locate(page.key, level, col, row, page.dzi.format)
        if found is None:
            raise TileMissing(f"tile {level}/{col}_{row} is not in the page's archive")
        return await gw.archives.read(page.key, *found)
    try:
        data, _, _ = await gw.reader.get_if_changed(
            page.key + tile_name(level, col, row, page.dzi.format), None)
    except ObjectNotFound:
        raise TileMissing(f"tile {level}/{col}_{row} of a finished page is missing") from None
    return data


async def read_tiles(gw, page: Page, src: Source) -> list[tuple[bytes, tuple]]:
    """The tiles under ``src`` with the part of each to take
    (:func:`planzoom.iiif.pieces`), read concurrently."""
    parts = pieces(page.dzi, src)
    data = await asyncio.gather(*(tile(gw, page, src.level, col, row)
                                  for col, row, _, _ in parts))
    return list(zip(data, parts, strict=True))


def _decode(data: bytes, fmt: str) -> np.ndarray:
    """A tile's pixels, (height, width, bands) uint8, 1 band for grey."""
    if fmt in ("jpg", "jpeg"):
        grey = simplejpeg.decode_jpeg_header(data)[2] == "Gray"
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "RGB")
        return pixels if pixels.ndim == 3 else pixels[:, :, None]
    image = pyvips.Image.new_from_buffer(data, "")
    if image.hasalpha():
        image = image.flatten(background=255)
    if image.bands not in (1, 3):
        image = image.colourspace("srgb")
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def canvas(dzi: DziInfo, src: Source, tiles: list[tuple[bytes, tuple]]) -> np.ndarray:
    """The box ``src`` of its level, (h, w, bands) uint8, from ``tiles``
    (:func:`read_tiles`); grey when every tile is. Raises Internal (500)
    for a tile whose size is not the one its descriptor gives."""
    decoded = [_decode(data, dzi.format) for data, _ in tiles]
    bands = 3 if any(t.shape[2] == 3 for t in decoded) else 1
    out = np.empty((src.h, src.w, bands), np.uint8)
    for pixels, (_, (col, row, (sx, sy, w, h), (dx, dy))) in zip(decoded, tiles, strict=True):
        _, _, tw, th = dzi.tile_box(src.level, col, row)
        if pixels.shape[:2] != (th, tw):
            raise Internal(f"tile {src.level}/{col}_{row} is {pixels.shape[1]} x "
                           f"{pixels.shape[0]} pixels; its descriptor says {tw} x {th}")
        out[dy:dy + h, dx:dx + w] = pixels[sy:sy + h, sx:sx + w]
    return out


def compose(dzi: DziInfo, src: Source, tiles: list[tuple[bytes, tuple]], plan: Plan,
            quality: int) -> bytes:
    """The answer to ``plan``, encoded: the region from ``tiles``, resized
    to ``plan.width x plan.height``, mirrored, rotated, in its quality and
    format (JPEG and WebP at ``quality``). CPU work: run it in a thread."""
    pixels = canvas(dzi, src, tiles)
    req = plan.request
    grey = pixels.shape[2] == 1
    if req.format == "jpg" and (src.w, src.h) == (plan.width, plan.height) and \
            not req.mirror and not req.rotation and (
                req.quality == "default" or req.quality == ("gray" if grey else "color")):
        # The canvas is the answer (a region at a level's own scale): encoded
        # straight from memory, a third faster than through pyvips.
        return simplejpeg.encode_jpeg(pixels, quality=quality,
                                      colorspace="GRAY" if grey else "RGB",
                                      colorsubsampling="Gray" if grey else (
                                          "444" if quality >= 90 else "420"))
    image = pyvips.Image.new_from_memory(pixels.data, src.w, src.h, pixels.shape[2], "uchar")
    image = image.copy(interpretation="srgb" if pixels.shape[2] == 3 else "b-w")
    if (src.w, src.h) != (plan.width, plan.height):
        image = image.resize(plan.width / src.w, vscale=plan.height / src.h)
    if req.mirror:
        image = image.fliphor()
    if req.rotation:
        image = image.rot(f"d{req.rotation}")
    if req.quality in ("gray", "bitonal") and image.bands == 3:
        image = image.colourspace("b-w")
    if req.quality == "bitonal":
        image = (image >= 128).cast("uchar").copy(interpretation="b-w")
    if req.quality == "color" and image.bands == 1:
        image = image.colourspace("srgb")
    if req.format == "jpg":
        return image.jpegsave_buffer(Q=quality)
    if req.format == "webp":
        return image.webpsave_buffer(Q=quality)
    return image.pngsave_buffer(bitdepth=1 if req.quality == "bitonal" else 8)


async def cut(gw, page: Page, src: Source, plan: Plan, regions: Regions,
              quality: int, org: str = "") -> bytes:
    """``plan`` cut from ``page`` at ``src`` (:func:`planzoom.iiif.source`)
    in one of ``regions``' slots, held for ``org``: tiles read on the loop,
    the rest in a thread. Raises RegionsBusy (503), TileMissing (500)."""
    async with regions.slot(org):
        tiles = await read_tiles(gw, page, src)
        work = asyncio.ensure_future(asyncio.to_thread(compose, page.dzi, src, tiles, plan,
                                                       quality))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # The client went away: the thread still runs; its slot is held
            # until it ends, so the bound on CPU work holds.
            await asyncio.wait({work})
            raise


def missing_page(page: int) -> NotFound:
    """404 for a page whose pyramid is not in the bucket (yet)."""
    return NotFound(f"page {page} has no image yet: its image service appears when the page is "
                    "done (or the job has no such page)", reason="NOT_FOUND")
