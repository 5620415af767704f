"""Admission of long-lived work in one process (uploads spooling in ingest,
watch streams in progress, tus PATCH requests in the gateway): how many at
once in all, per org and per caller, so one org, or one token, cannot take
every slot."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from planzoom.errors import PlanzoomError, ResourceExhausted, Unavailable

#: Seconds a refused caller is told to wait (google.rpc.RetryInfo).
RETRY_AFTER_SECONDS = 5.0


class UploadsBusy(ResourceExhausted):
    reason = "TOO_MANY_UPLOADS"


class WatchesBusy(ResourceExhausted):
    reason = "TOO_MANY_WATCHES"


class PatchesBusy(Unavailable):
    reason = "UPLOADS_BUSY"


class Slots:
    """At most ``total`` of ``what`` (a plural noun: "uploads") at once in
    this process, ``per_org`` of them for one org and ``per_caller`` for one
    caller (org and subject; 0: no such limit); beyond that ``error`` with a
    retry hint, naming the setting (``settings``: the total's, the org's and
    the caller's) an operator would raise."""

    def __init__(self, what: str, error: type[PlanzoomError], total: int, per_org: int,
                 per_caller: int = 0, settings: tuple[str, str, str] = ("", "", "")):
        self.what, self.error, self.settings = what, error, settings
        self.total, self.per_org, self.per_caller = total, per_org, per_caller
        self._by_org: Counter[str] = Counter()
        self._by_caller: Counter[tuple[str, str]] = Counter()

    def _refuse(self, held: str, most: int, setting: str) -> PlanzoomError:
        return self.error(f"{held} {most} {self.what} in progress, the most allowed at once; "
                          f"retry in {RETRY_AFTER_SECONDS:g} s"
                          + (f" or ask the operator to raise PLANZOOM_{setting}" if setting
                             else ""), retry_after=RETRY_AFTER_SECONDS)

    @contextlib.contextmanager
    def hold(self, org: str, subject: str = "") -> Iterator[None]:
        """A slot for one of ``org``'s (and ``subject``'s) for the block;
        ``error`` (with a retry hint) if there is none."""
        caller = (org, subject)
        if sum(self._by_org.values()) >= self.total:
            raise self._refuse("this server has", self.total, self.settings[0])
        if self._by_org[org] >= self.per_org:
            raise self._refuse(f"org {org!r} has", self.per_org, self.settings[1])
        if self.per_caller and self._by_caller[caller] >= self.per_caller:
            raise self._refuse(f"{subject or 'this caller'} has", self.per_caller,
                               self.settings[2])
        self._by_org[org] += 1
        self._by_caller[caller] += 1
        try:
            yield
        finally:
            for counts, key in ((self._by_org, org), (self._by_caller, caller)):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
