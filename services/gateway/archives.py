"""Archives' directories, kept: the gateway serves a page's DZI descriptor
and tiles out of its archive (layout ARCHIVE, planzoom.engines.archive)
with one range GET per tile once the archive's directory is known.

An archive never changes once written (a page's archive is its completion
mark; a job writes under its own id), so a directory is kept until
``PLANZOOM_GATEWAY_ARCHIVES`` others have been used since (least recently
used first). Two requests for one archive's directory at once read it once.
For the same reason, the tiles read last are kept, up to
``PLANZOOM_GATEWAY_TILE_CACHE_BYTES``: a crew tends to look at the same
sheets, and a tile kept costs no request to the store.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict

from planzoom.engines.archive import ArchiveIndex
from planzoom.storage import ObjectStore
from planzoom.store_reader import AsyncReader


class Archives:
    """Up to ``capacity`` archives' indexes, by object key, and the tiles
    read last, up to ``tile_bytes`` bytes."""

    def __init__(self, store: ObjectStore, reader: AsyncReader, capacity: int,
                 tile_bytes: int = 0):
        self.store, self.reader, self.capacity = store, reader, capacity
        self.tile_bytes = tile_bytes
        self._tiles: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._kept_bytes = 0
        self._indexes: OrderedDict[str, ArchiveIndex] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}

    async def index(self, key: str) -> ArchiveIndex:
        """The archive at ``key``'s index. Raises ObjectNotFound (no such
        archive: the page is not done) or ArchiveUnreadable."""
        index = self._indexes.get(key)
        if index is not None:
            self._indexes.move_to_end(key)
            return index
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(asyncio.to_thread(
                ArchiveIndex.load, functools.partial(self.store.get_range, key)))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        index = await asyncio.shield(loading)
        self._indexes[key] = index
        while len(self._indexes) > self.capacity:
            self._indexes.popitem(last=False)
        return index

    async def locate(self, key: str, level: int, col: int, row: int, fmt: str
                     ) -> tuple[int, int] | None:
        """Where a tile's bytes are in the archive at ``key``: (offset,
        length), bytes; None if the pyramid has no such tile (or its tiles
        are not ``fmt``). Reads a leaf directory the first time a tile
        needs it. Raises ObjectNotFound or ArchiveUnreadable."""
        index = await self.index(key)
        if fmt != index.dzi.format:
            return None
        leaf = index.leaf_to_read(level, col, row)
        if leaf is not None:
            index.keep_leaf(leaf[0], await self.reader.get_range(key, *leaf))
        return index.locate(level, col, row)

    async def read(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the archive at ``key`` from ``offset``: one
        range GET, unless they are among the tiles kept."""
        kept = self._tiles.get((key, offset))
        if kept is not None:
            self._tiles.move_to_end((key, offset))
            return kept
        data = await self.reader.get_range(key, offset, length)
        if len(data) <= self.tile_bytes // 16:
            self._tiles[key, offset] = data
            self._kept_bytes += len(data)
            while self._kept_bytes > self.tile_bytes:
                self._kept_bytes -= len(self._tiles.popitem(last=False)[1])
        return data
