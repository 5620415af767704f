"""What a job leaves in the bucket when it ends: ``manifest.json``, no
``work/<job>/``, and for a cancelled job nothing of its pages that did not
finish (pyramids, variants)."""

from __future__ import annotations

import re

from google.protobuf import json_format

from planzoom import keys
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2

#: An object of one page under a job's tiles prefix: ``page-<n>_files/…``
#: or ``page-<n>.<anything>``.
_PAGE_OBJECT = re.compile(r"page-([1-9][0-9]*)[._]")


def manifest_json(job: jobs_pb2.Job) -> bytes:
    """The job record as ``manifest.json`` (protobuf JSON mapping, field
    names as in jobs.proto, every field printed)."""
    record = jobs_pb2.Job()
    record.CopyFrom(job)
    record.ClearField("revision")
    return json_format.MessageToJson(
        record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
        indent=2,
    ).encode()


def write_outputs(store: ObjectStore, job: jobs_pb2.Job) -> None:
    """Write ``manifest.json`` and delete ``work/<job>/`` (a COMPLETE job
    has joined its plan's register and ``current.json`` first:
    services.progress.register). Idempotent, so a writer that stopped
    part-way can run it again. Blocking: call from a thread."""
    job = keys.with_keys(job)
    store.put_bytes(job.manifest_key, manifest_json(job), "application/json")
    store.delete_prefix(keys.work_prefix(job.job_id))
    if job.state == jobs_pb2.JOB_STATE_CANCELLED:
        # A tile worker may finish a page just as the job is cancelled: what
        # it wrote goes here (the worker also looks once more after writing).
        # One listing of the job's objects, not one per page: a big set is
        # cancelled while its caller waits.
        unfinished = {p.page for p in job.pages if p.state != jobs_pb2.PAGE_STATE_DONE}
        prefix = keys.tiles_prefix(job.plan, job.job_id)
        store.delete_keys([k for k in store.list_keys(prefix)
                           if (m := _PAGE_OBJECT.match(k, len(prefix)))
                           and int(m[1]) in unfinished])  # _files/, .dzi, .pmtiles, variants
        if keys.is_archive(job.options):
            for n in sorted(unfinished):
                store.abort_uploads(keys.archive_key(job.plan, job.job_id, n))
