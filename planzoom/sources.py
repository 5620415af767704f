"""Sources (PDFs, images, videos) on a worker's local disk (render,
transcode), downloaded once for all the pages of a set."""

from __future__ import annotations

import asyncio
import os

from planzoom.errors import InvalidInput
from planzoom.scratch import Scratch
from planzoom.storage import ObjectStore

#: Sources kept on local disk for the next pages of the same set.
SOURCE_CACHE_FILES = 8
SUFFIX = ".src"


class SourceGone(InvalidInput):
    """The job's source is no longer in the bucket; no retry brings it back."""

    reason = "SOURCE_GONE"


class SourceCache:
    """Source PDFs under ``root``, keyed by sha256; the least recently used
    beyond SOURCE_CACHE_FILES are removed, and more of them when a new one
    needs their room in ``scratch``."""

    def __init__(self, store: ObjectStore, root: str, scratch: Scratch | None = None):
        self.store, self.root = store, root
        self.scratch = scratch or Scratch(root)
        self._lock = asyncio.Lock()  # one download at a time; pages wait for their source

    async def path(self, key: str, sha256: str) -> str:
        """Local path of the source at ``key``, downloading it if needed.
        Raises SourceGone if the bucket no longer has it, ScratchFull
        (retryable) if it does not fit in the scratch space."""
        path = os.path.join(self.root, f"{sha256}{SUFFIX}")
        async with self._lock:
            if not os.path.exists(path):
                tmp = path + ".part"
                size = await asyncio.to_thread(self.store.size, key)
                if size is None:
                    raise SourceGone(f"the source {key} is no longer in the bucket")
                await asyncio.to_thread(self._make_room, size)
                await asyncio.to_thread(self.store.download_file, key, tmp)
                os.replace(tmp, path)
                self._evict(keep=path)
        os.utime(path)
        return path

    def _make_room(self, size: int) -> None:
        """Remove cached sources, least recently used first, until ``size``
        bytes fit; ScratchFull if they do not even then."""
        free, cached = self.scratch.free(), self._cached()
        if free >= size:
            return
        if free + sum(os.path.getsize(f) for f in cached) < size:
            self.scratch.need(size, "the job's source")  # evicting would not help
        for f in cached:
            os.unlink(f)
            if self.scratch.free() >= size:
                return
        self.scratch.need(size, "the job's source")

    def _cached(self) -> list[str]:
        """The cached sources, least recently used first."""
        return sorted(
            (os.path.join(self.root, f) for f in os.listdir(self.root) if f.endswith(SUFFIX)),
            key=os.path.getmtime,
        )

    def _evict(self, keep: str) -> None:
        files = self._cached()
        for f in files[: max(0, len(files) - SOURCE_CACHE_FILES)]:
            if f != keep:
                os.unlink(f)
