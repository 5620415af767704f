"""Scratch space: the local disk a service works on (ingest's spooled
uploads, render's and transcode's cached sources, transcode's renditions).

What is free is the smaller of two figures: the file system's free bytes
(statvfs) and, when ``PLANZOOM_SCRATCH_BYTES`` is set, that budget less the
bytes of the files under ``PLANZOOM_WORK_DIR``. The second is the one that
matters on Kubernetes: an emptyDir's ``sizeLimit`` is invisible to statvfs
(which reads the node's disk), and a pod that writes past it is evicted,
with every job it held. The chart sets the budget to the volume's size.

Work that would not fit is refused with ScratchFull (UNAVAILABLE,
``SCRATCH_FULL``): a page job is redelivered later, an upload is retried by
its client, instead of the volume filling up.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from planzoom.errors import Unavailable

#: Seconds a caller refused for want of scratch space is told to wait.
RETRY_AFTER_SECONDS = 30.0


class ScratchFull(Unavailable):
    reason = "SCRATCH_FULL"


def tree_bytes(root: str) -> int:
    """Bytes of the regular files under ``root`` (symlinks not followed;
    files that vanish meanwhile not counted)."""
    total, stack = 0, [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


class Scratch:
    """The scratch volume at ``root`` (default: the system temp dir) with
    ``budget`` bytes (0: only the file system's free space counts)."""

    def __init__(self, root: str | None = None, budget: int = 0):
        self.root, self.budget = root or tempfile.gettempdir(), budget

    def free(self) -> int:
        """Bytes that may still be written, ≥ 0."""
        free = shutil.disk_usage(self.root).free
        if self.budget:
            free = min(free, self.budget - tree_bytes(self.root))
        return max(0, free)

    def need(self, size: int, what: str) -> None:
        """ScratchFull unless ``size`` more bytes fit; ``what`` names the
        work in the message ("the upload", "the video's renditions")."""
        free = self.free()
        if size > free:
            raise ScratchFull(f"{what} needs {size:,} bytes of scratch space and only {free:,} "
                              f"are free on this server; retry in {RETRY_AFTER_SECONDS:g} s",
                              retry_after=RETRY_AFTER_SECONDS)
