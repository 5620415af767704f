"""What a job leaves in the bucket when it ends: ``manifest.json``, no
``work/<job>/``, and for a cancelled job nothing of its pages that did not
finish (pyramids, variants)."""

from __future__ import annotations

from google.protobuf import json_format

from planzoom import keys
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2


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
        prefix = keys.tiles_prefix(job.plan, job.job_id)
        for page in job.pages:
            if page.state != jobs_pb2.PAGE_STATE_DONE:
                name = keys.page_name(page.page)
                if keys.is_archive(job.options):
                    store.abort_uploads(keys.archive_key(job.plan, job.job_id, page.page))
                store.delete_prefix(f"{prefix}{name}_files/")
                store.delete_prefix(f"{prefix}{name}.")  # .dzi, .pmtiles, variants
