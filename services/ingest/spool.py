"""The upload on local disk while it arrives, checked as it comes."""

from __future__ import annotations

import hashlib
import os
import tempfile

from planzoom.errors import InvalidInput, ResourceExhausted
from planzoom.media import HEADER_WINDOW, Kind, sniff
from planzoom.scratch import Scratch


class UploadTooLarge(ResourceExhausted):
    reason = "UPLOAD_TOO_LARGE"

    def __init__(self, size: int, limit: int):
        super().__init__(
            f"the file is larger than the {limit:,}-byte upload limit ({size:,} bytes or more); "
            "split the plan set or ask the operator to raise PLANZOOM_MAX_UPLOAD_BYTES")


class Spool:
    """The upload in a temporary file under ``work_dir``: its size, sha256,
    first bytes and :class:`~planzoom.media.Kind`. Refuses more than
    ``limit`` bytes (UploadTooLarge), more than ``scratch`` has room for
    (ScratchFull, retryable) and, once its first HEADER_WINDOW bytes are in,
    anything that is not a PDF or a still image (Unsupported)."""

    def __init__(self, work_dir: str | None, limit: int, video_limit: int | None = None,
                 scratch: Scratch | None = None):
        """``limit`` bytes for any file; a video (known from its first bytes)
        may have up to ``video_limit``."""
        self.scratch = scratch
        fd, self.path = tempfile.mkstemp(prefix="planzoom-upload-", dir=work_dir)
        self._file = os.fdopen(fd, "wb")
        self.video_limit = video_limit or limit
        self.limit, self.size, self.head = max(limit, self.video_limit), 0, b""
        self._other_limit = limit
        self.kind: Kind | None = None
        self._sha = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadTooLarge(self.size, self.limit)
        if len(self.head) < HEADER_WINDOW:
            self.head += chunk[: HEADER_WINDOW - len(self.head)]
            if len(self.head) >= HEADER_WINDOW:
                self.kind = sniff(self.head)
                self.limit = self.video_limit if self.kind.is_video else self._other_limit
                if self.size > self.limit:
                    raise UploadTooLarge(self.size, self.limit)
        if self.scratch:
            self.scratch.need(len(chunk), "the upload")
        self._sha.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Close the file, check it, and return the sha256 hex digest."""
        self._file.close()
        if self.size == 0:
            raise InvalidInput("the file is empty (0 bytes); upload the plan PDF itself",
                               reason="EMPTY_FILE")
        self.kind = sniff(self.head)
        limit = self.video_limit if self.kind.is_video else self._other_limit
        if self.size > limit:
            raise UploadTooLarge(self.size, limit)
        return self._sha.hexdigest()

    def discard(self) -> None:
        self._file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
