"""WatchJob's deltas: what the progress service sends after the first
update of a stream, and how a client rebuilds the whole record from them.

A 2,000-page job changes about 6,000 times (each page rendering, tiling,
done); sending the whole record (hundreds of kB) to every watcher at each
change made the fan-out cost grow with pages x watchers. A delta is the
record's summary fields and the pages that changed since the stream's
previous update (progress.proto, ``JobUpdate``).
"""

from __future__ import annotations

from collections.abc import Iterable

from planzoom import keys
from planzoom.v1 import jobs_pb2, progress_pb2


def snapshot(job: jobs_pb2.Job) -> progress_pb2.JobUpdate:
    """The whole record (with its output keys) as a stream's first update."""
    return progress_pb2.JobUpdate(job=job, snapshot=True)


def summary(job: jobs_pb2.Job) -> jobs_pb2.Job:
    """``job`` without its pages (a copy)."""
    out = jobs_pb2.Job()
    out.CopyFrom(job)
    out.ClearField("pages")
    return out


def delta(summary_of_job: jobs_pb2.Job, job: jobs_pb2.Job,
          pages: Iterable[int]) -> progress_pb2.JobUpdate:
    """A delta: ``summary_of_job`` (see :func:`summary`) and the pages of
    ``job`` numbered ``pages`` (1-based), in page order, with their output
    keys (:func:`planzoom.keys.derive_keys`)."""
    update = progress_pb2.JobUpdate()
    update.job.CopyFrom(summary_of_job)
    update.job.pages.extend(job.pages[n - 1] for n in sorted(pages))
    keys.derive_keys(job, update.job)
    return update


def apply_update(current: jobs_pb2.Job | None,
                 update: progress_pb2.JobUpdate) -> jobs_pb2.Job:
    """The whole record after ``update``: a snapshot as it is, a delta merged
    into ``current`` (the record rebuilt from the stream's earlier updates,
    left unchanged). Raises ValueError for a delta with no record before it
    or naming a page the record does not have."""
    if update.snapshot:
        job = jobs_pb2.Job()
        job.CopyFrom(update.job)
        return job
    if current is None:
        raise ValueError("a WatchJob delta came before any snapshot")
    job = jobs_pb2.Job()
    job.CopyFrom(update.job)
    del job.pages[:]
    job.pages.extend(current.pages)
    for page in update.job.pages:
        if not 1 <= page.page <= len(job.pages):
            raise ValueError(f"a WatchJob delta names page {page.page} of a "
                             f"{len(job.pages)}-page record")
        job.pages[page.page - 1].CopyFrom(page)
    return job
