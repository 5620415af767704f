"""Admission of uploads: how many may spool at once, in all and per org."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from planzoom.errors import ResourceExhausted

#: Seconds a refused caller is told to wait (google.rpc.RetryInfo).
RETRY_AFTER_SECONDS = 5.0


class UploadsBusy(ResourceExhausted):
    reason = "TOO_MANY_UPLOADS"


class UploadSlots:
    """At most ``total`` uploads at once in this process, and at most
    ``per_org`` of them for one org, so one org cannot take every slot."""

    def __init__(self, total: int, per_org: int):
        self.total, self.per_org = total, per_org
        self._by_org: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, org: str) -> Iterator[None]:
        """A slot for one upload of ``org`` for the block; UploadsBusy (with
        a retry hint) if there is none."""
        if sum(self._by_org.values()) >= self.total:
            raise UploadsBusy(f"this ingest server is taking {self.total} uploads already; "
                              f"retry in {RETRY_AFTER_SECONDS:g} s",
                              retry_after=RETRY_AFTER_SECONDS)
        if self._by_org[org] >= self.per_org:
            raise UploadsBusy(f"org {org!r} has {self.per_org} uploads in progress, the most "
                              f"one org may have at once; retry in {RETRY_AFTER_SECONDS:g} s "
                              "or ask the operator to raise "
                              "PLANZOOM_MAX_CONCURRENT_UPLOADS_PER_ORG",
                              retry_after=RETRY_AFTER_SECONDS)
        self._by_org[org] += 1
        try:
            yield
        finally:
            self._by_org[org] -= 1
            if not self._by_org[org]:
                del self._by_org[org]
