"""An S3 multipart upload whose parts are sent as they are made, a few
in flight, its first part last (a page's archive: its head is known only
at the end)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from planzoom.storage import ObjectStore


class PartUpload:
    """One object written as its parts come (an S3 multipart upload, begun
    at the first part), parts 2, 3, ... sent in the background while the
    writer goes on and part 1 given last, to :meth:`finish`; an object that
    never needed a second part is one PUT. Nothing is visible at ``key``
    before :meth:`finish` returns. ``requests`` counts the S3 requests."""

    def __init__(self, store: ObjectStore, key: str, content_type: str, in_flight: int = 2):
        self.store, self.key, self.content_type = store, key, content_type
        self._pool = ThreadPoolExecutor(in_flight, thread_name_prefix="part-upload")
        self._lock = threading.Lock()
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        self._sent: list[Future] = []
        self.requests = 0

    def _begin(self) -> str:
        with self._lock:
            if self._upload_id is None:
                self._upload_id = self.store.start_multipart(self.key, self.content_type)
                self.requests += 1
            return self._upload_id

    def part(self, number: int, data: bytes) -> Future:
        """Send part ``number`` (2 or more; at least 5 MiB unless the last);
        the future is done when it is stored."""

        def send() -> None:
            etag = self.store.put_part(self.key, self._begin(), number, data)
            with self._lock:
                self._etags[number] = etag
                self.requests += 1

        future = self._pool.submit(send)
        self._sent.append(future)
        return future

    def finish(self, head: bytes) -> None:
        """Store ``head`` as the whole object (no part was sent) or as part 1,
        and join the parts. Raises what a part's upload raised."""
        try:
            for future in self._sent:
                future.result()
            if self._upload_id is None:
                self.store.put_bytes(self.key, head, self.content_type)
                self.requests += 1
                return
            self._etags[1] = self.store.put_part(self.key, self._upload_id, 1, head)
            self.store.complete_multipart(self.key, self._upload_id,
                                          [self._etags[n] for n in sorted(self._etags)])
            self.requests += 2
        finally:
            self._pool.shutdown(wait=False)

    def abort(self) -> None:
        """Drop the parts sent so far (the object never appears)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id is not None:
            self.store.abort_multipart(self.key, self._upload_id)
