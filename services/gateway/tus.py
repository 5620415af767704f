"""tus 1.0.0 (https://tus.io/protocols/resumable-upload), the protocol of
planzoom's resumable uploads: its version and extensions, the request
headers read (``Tus-Resumable``, ``Upload-Length``, ``Upload-Offset``,
``Upload-Metadata``) and the answer headers written, and the job an upload's
metadata names. No I/O: :mod:`services.gateway.uploads` keeps the uploads,
:mod:`services.gateway.upload_routes` serves them.
"""

from __future__ import annotations

import base64
import binascii
import email.utils

from fastapi import Request
from google.protobuf.timestamp_pb2 import Timestamp

from planzoom.errors import InvalidInput
from planzoom.v1 import events_pb2, jobs_pb2
from services.gateway.problems import Problem

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
#: Job options an upload's metadata may set, and their types.
OPTION_FIELDS = {"dpi": float, "tile_size": int, "overlap": int, "jpeg_quality": int}
#: The pyramid layouts an upload's metadata may name (JobOptions.layout).
LAYOUTS = {"files": jobs_pb2.PYRAMID_LAYOUT_FILES, "archive": jobs_pb2.PYRAMID_LAYOUT_ARCHIVE}
METADATA_KEYS = {"org", "project", "plan", "filename", "filetype", "layout", *OPTION_FIELDS}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds_of(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def http_date(ts: Timestamp) -> str:
    """An RFC 9110 HTTP-date, as tus's Upload-Expires wants."""
    return email.utils.formatdate(seconds_of(ts), usegmt=True)

def parse_metadata(header: str) -> dict[str, str]:
    """tus Upload-Metadata: ``key base64value`` pairs separated by commas
    (a value may be absent). Raises InvalidInput for a malformed header, a
    key given twice, or a value that is not base64 of UTF-8 text."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, value = item.partition(" ")
        if not key or " " in value.strip() or key in pairs:
            raise InvalidInput(f"Upload-Metadata has a malformed or repeated pair {item!r}",
                               field="Upload-Metadata")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text",
                               field="Upload-Metadata") from None
    return pairs


def job_request(meta: dict[str, str], caller_org: str
                ) -> tuple[jobs_pb2.PlanRef, jobs_pb2.JobOptions, str]:
    """The plan, job options and file name an upload's metadata names.
    Raises InvalidInput for unknown keys, a missing project or plan, or an
    option that is not a number in its range."""
    unknown = sorted(set(meta) - METADATA_KEYS)
    if unknown:
        raise InvalidInput(f"Upload-Metadata has unknown keys {unknown}; known: "
                           f"{sorted(METADATA_KEYS)}", field="Upload-Metadata")
    if not meta.get("project") or not meta.get("plan"):
        raise InvalidInput("Upload-Metadata must name the project and the plan",
                           field="Upload-Metadata")
    plan = jobs_pb2.PlanRef(org=meta.get("org") or caller_org, project=meta["project"],
                            plan=meta["plan"])
    options = jobs_pb2.JobOptions()
    for name, kind in OPTION_FIELDS.items():
        if name in meta:
            try:
                setattr(options, name, kind(meta[name]))
            except ValueError:
                raise InvalidInput(f"option {name} must be a number, not {meta[name]!r}",
                                   field=f"options.{name}") from None
    if "layout" in meta:
        if meta["layout"] not in LAYOUTS:
            raise InvalidInput(f"layout must be one of {sorted(LAYOUTS)}, not "
                               f"{meta['layout'][:40]!r}", field="options.layout")
        options.layout = LAYOUTS[meta["layout"]]
    return plan, options, meta.get("filename", "")[:255]


def tus_headers(**extra: str) -> dict[str, str]:
    """The headers of every tus answer (and ``extra``)."""
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


def check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise Problem(412, f"send 'Tus-Resumable: {TUS_VERSION}' (the only version served)",
                      "TUS_VERSION", tus_headers(**{"Tus-Version": TUS_VERSION}))


def length_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer", field=name)
    return int(value)


def state_headers(upload: events_pb2.TusUpload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
               "Upload-Expires": http_date(upload.expires_at)}
    if upload.job_id:
        headers["Planzoom-Job-Id"] = upload.job_id
    return tus_headers(**headers)
