"""What a job leaves in the bucket when it ends: ``manifest.json``, the
plan's ``current.json`` (for a complete job), no ``work/<job>/``, and for a
cancelled job none of the variants of its pages that did not finish."""

from __future__ import annotations

import json

from google.protobuf import json_format

from planzoom import keys
from planzoom.storage import ObjectNotFound, ObjectStore
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
        "dzi_keys": [p.dzi_key for p in job.pages],
        "finished_at": json_format.MessageToJson(job.finished_at).strip('"'),
    }, indent=2).encode()


def write_outputs(store: ObjectStore, job: jobs_pb2.Job) -> None:
    """Write ``manifest.json``, point ``current.json`` at a COMPLETE job
    (unless a newer job already has it: job ids sort by creation time) and
    delete ``work/<job>/``. Idempotent, so a writer that stopped part-way
    can run it again. Blocking: call from a thread."""
    job = keys.with_keys(job)
    store.put_bytes(job.manifest_key, manifest_json(job), "application/json")
    if job.state == jobs_pb2.JOB_STATE_COMPLETE:
        key = keys.current_key(job.plan)
        try:
            newest = json.loads(store.get_bytes(key)).get("job_id", "")
        except ObjectNotFound:
            newest = ""
        if newest <= job.job_id:
            store.put_bytes(key, current_json(job), "application/json")
    store.delete_prefix(keys.work_prefix(job.job_id))
    if job.state == jobs_pb2.JOB_STATE_CANCELLED:
        for page in job.pages:
            if page.state != jobs_pb2.PAGE_STATE_DONE:
                for variant in page.variants:
                    store.delete(keys.variant_key(job.plan, job.job_id, page.page,
                                                  variant.name, variant.format))
