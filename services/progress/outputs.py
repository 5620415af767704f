"""What a job leaves in the bucket when it ends: ``manifest.json``, the
plan's ``current.json`` (for a complete job), no ``work/<job>/``, and for a
cancelled job nothing of its pages that did not finish (pyramids, variants)."""

from __future__ import annotations

import json

from google.protobuf import json_format

from planzoom import keys
from planzoom.storage import ObjectNotFound, ObjectStore, WriteConflict
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


def current_json(job: jobs_pb2.Job) -> bytes:
    """``current.json``: where a viewer finds the plan's newest complete job."""
    return json.dumps({
        "job_id": job.job_id,
        "manifest_key": job.manifest_key,
        "tiles_prefix": job.tiles_prefix,
        "total_pages": job.total_pages,
        "layout": jobs_pb2.PyramidLayout.Name(job.options.layout),
        "dzi_keys": [p.dzi_key for p in job.pages],
        "archive_keys": [p.archive_key for p in job.pages],
        "finished_at": json_format.MessageToJson(job.finished_at).strip('"'),
    }, indent=2).encode()


#: Tries of moving current.json while other jobs of the plan move it too.
CURRENT_ATTEMPTS = 20


def move_current(store: ObjectStore, job: jobs_pb2.Job) -> None:
    """Point the plan's ``current.json`` at ``job`` unless a newer job (job
    ids sort by creation time) has it already: a conditional write on what
    was read (If-Match its ETag, If-None-Match ``*`` when there was none),
    read again when another job's end got in between, so that two jobs
    ending at once can never leave the older one current."""
    key = keys.current_key(job.plan)
    for _ in range(CURRENT_ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
            newest = json.loads(data).get("job_id", "")
        except ObjectNotFound:
            newest, etag = "", None
        if newest > job.job_id:
            return
        try:
            store.put_bytes(key, current_json(job), "application/json", if_match=etag,
                            if_absent=etag is None)
            return
        except WriteConflict:
            continue
    raise WriteConflict(key)


def write_outputs(store: ObjectStore, job: jobs_pb2.Job) -> None:
    """Write ``manifest.json``, point ``current.json`` at a COMPLETE job
    (unless a newer job already has it: job ids sort by creation time) and
    delete ``work/<job>/``. Idempotent, so a writer that stopped part-way
    can run it again. Blocking: call from a thread."""
    job = keys.with_keys(job)
    store.put_bytes(job.manifest_key, manifest_json(job), "application/json")
    if job.state == jobs_pb2.JOB_STATE_COMPLETE:
        move_current(store, job)
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
