"""Sources (PDFs, images, videos) on a worker's local disk (render,
transcode), downloaded once for all the pages of a set."""

from __future__ import annotations

import asyncio
import os

from planzoom.errors import InvalidInput
from planzoom.storage import ObjectStore

#: Sources kept on local disk for the next pages of the same set.
SOURCE_CACHE_FILES = 8
SUFFIX = ".src"


class SourceGone(InvalidInput):
    """The job's source is no longer in the bucket; no retry brings it back."""

    reason = "SOURCE_GONE"


class SourceCache:
    """Source PDFs under ``root``, keyed by sha256; the least recently used
    beyond SOURCE_CACHE_FILES are removed."""

    def __init__(self, store: ObjectStore, root: str):
        self.store, self.root = store, root
        self._lock = asyncio.Lock()  # one download at a time; pages wait for their source

    async def path(self, key: str, sha256: str) -> str:
        """Local path of the source at ``key``, downloading it if needed.
        Raises SourceGone if the bucket no longer has it."""
        path = os.path.join(self.root, f"{sha256}{SUFFIX}")
        async with self._lock:
            if not os.path.exists(path):
                tmp = path + ".part"
                if not await asyncio.to_thread(self.store.exists, key):
                    raise SourceGone(f"the source {key} is no longer in the bucket")
                await asyncio.to_thread(self.store.download_file, key, tmp)
                os.replace(tmp, path)
                self._evict(keep=path)
        os.utime(path)
        return path

    def _evict(self, keep: str) -> None:
        files = sorted(
            (os.path.join(self.root, f) for f in os.listdir(self.root) if f.endswith(SUFFIX)),
            key=os.path.getmtime,
        )
        for f in files[: max(0, len(files) - SOURCE_CACHE_FILES)]:
            if f != keep:
                os.unlink(f)
