"""The object layout in the S3 bucket (docs/architecture.md, "Object layout").

::

    sources/<org>/<project>/<plan>/<sha256>.<suffix>  (pdf, jpg, tif, heic, ...: the kind)
    uploads/<org>/<project>/<plan>/<upload id>     (presigned PUTs, until SubmitJob)
    tus/<tus upload id>.pending                    (a tus upload's bytes short of a part)
    work/<job>/page-<n>.raw.zst                    (deleted when the job ends)
    tiles/<org>/<project>/<plan>/<job>/page-<n>.dzi
    tiles/<org>/<project>/<plan>/<job>/page-<n>_files/<level>/<col>_<row>.jpg
    tiles/<org>/<project>/<plan>/<job>/page-<n>.<variant>.<jpg|webp>  (thumbnail, overview, ...)
    tiles/<org>/<project>/<plan>/<job>/page-<n>.pmtiles   (layout ARCHIVE: instead of .dzi, _files/)
    tiles/<org>/<project>/<plan>/<job>/page-<n>.words.json.gz  (a PDF page's words and boxes)
    tiles/<org>/<project>/<plan>/<job>/search.sqlite  (the job's words, SQLite FTS5)
    tiles/<org>/<project>/<plan>/<job>/sheets.json    (the job's sheet index)
    tiles/<org>/<project>/<plan>/<job>/page-<n>.overlay.json  (a revised sheet over its previous
    tiles/<org>/<project>/<plan>/<job>/page-<n>.overlay-<prev job>-<prev page>.dzi, …_files/
                                                   version: transform, changes; its pyramid)
    work/<job>/page-<n>.sheet.json                 (a page's sheet candidates, until the job ends)
    tiles/<org>/<project>/<plan>/<job>/manifest.json
    tiles/<org>/<project>/<plan>/current.json
    tiles/<org>/<project>/<plan>/register.json     (the plan's sets, for its sheets' versions)
    previews/<org>/<project>/<plan>/<job>/master.m3u8, <rung>/index.m3u8,
        <rung>/seg-NNNNN.ts, poster.jpg, thumbnail.jpg       (a video's HLS)

Every id that reaches a key is checked with :func:`planzoom.ids.check_id`.
Page numbers are 1-based.
"""

from __future__ import annotations

import functools
import re

from planzoom.ids import check_id
from planzoom.media import VIDEO_KINDS
from planzoom.v1 import jobs_pb2


def _plan_path(plan: jobs_pb2.PlanRef) -> str:
    return "/".join(
        (
            check_id("org", plan.org),
            check_id("project", plan.project),
            check_id("plan", plan.plan),
        )
    )


def source_key(plan: jobs_pb2.PlanRef, sha256_hex: str, suffix: str = "pdf") -> str:
    return f"sources/{_plan_path(plan)}/{sha256_hex}.{suffix}"


#: Where presigned uploads land before SubmitJob checks them.
UPLOADS_PREFIX = "uploads/"
#: A staged upload stays this long after its URL expired (a SubmitJob may be
#: reading it).
UPLOAD_GRACE_SECONDS = 600.0


def upload_prefix(plan: jobs_pb2.PlanRef) -> str:
    """Where presigned uploads for ``plan`` land before SubmitJob checks them."""
    return f"{UPLOADS_PREFIX}{_plan_path(plan)}/"


def tus_pending_key(tus_id: str) -> str:
    """Where a tus upload keeps the bytes it has received beyond its last
    multipart part, between two PATCH requests."""
    return f"tus/{check_id('upload', tus_id)}.pending"


#: An upload id: 32 hex digits (CreateUploadUrl makes them).
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def upload_key(plan: jobs_pb2.PlanRef, upload_id: str) -> str:
    return upload_prefix(plan) + check_id("upload", upload_id)


def upload_id_of(plan: jobs_pb2.PlanRef, key: str) -> str | None:
    """The upload id if ``key`` is exactly an upload key of ``plan``, else None."""
    prefix = upload_prefix(plan)
    upload_id = key[len(prefix):] if key.startswith(prefix) else ""
    return upload_id if UPLOAD_ID.fullmatch(upload_id) else None


def work_prefix(job_id: str) -> str:
    return f"work/{check_id('job_id', job_id)}/"


def raster_key(job_id: str, page: int) -> str:
    return f"{work_prefix(job_id)}page-{page}.raw.zst"


def sheet_candidates_key(job_id: str, page: int) -> str:
    """A page's sheet-identity candidates (planzoom.engines.sheets), read
    when the job ends."""
    return f"{work_prefix(job_id)}page-{page}.sheet.json"


def org_tiles_prefix(org: str) -> str:
    """Where every plan of ``org`` has its folder of outputs."""
    return f"tiles/{check_id('org', org)}/"


def plan_tiles_prefix(plan: jobs_pb2.PlanRef) -> str:
    return f"tiles/{_plan_path(plan)}/"


def tiles_prefix(plan: jobs_pb2.PlanRef, job_id: str) -> str:
    return f"{plan_tiles_prefix(plan)}{check_id('job_id', job_id)}/"


def page_name(page: int) -> str:
    """Base name of a page's DZI: ``page-<n>`` (``.dzi`` and ``_files/`` follow)."""
    return f"page-{page}"


def dzi_key(plan: jobs_pb2.PlanRef, job_id: str, page: int) -> str:
    return f"{tiles_prefix(plan, job_id)}{page_name(page)}.dzi"


#: The suffix of a page's archive (PMTiles v3, planzoom.engines.archive).
ARCHIVE_SUFFIX = "pmtiles"


def archive_key(plan: jobs_pb2.PlanRef, job_id: str, page: int) -> str:
    """A page's pyramid in one object (layout ARCHIVE, planzoom.engines.archive)."""
    return f"{tiles_prefix(plan, job_id)}{page_name(page)}.{ARCHIVE_SUFFIX}"


def is_archive(options: jobs_pb2.JobOptions) -> bool:
    """True if a job with ``options`` keeps each page's pyramid in one object."""
    return options.layout == jobs_pb2.PYRAMID_LAYOUT_ARCHIVE


def done_key(plan: jobs_pb2.PlanRef, job_id: str, page: int,
             options: jobs_pb2.JobOptions) -> str:
    """The object whose presence says a page is complete: its archive, or
    (layout FILES) its ``.dzi``, written after its tiles."""
    return (archive_key if is_archive(options) else dzi_key)(plan, job_id, page)


def page_files_prefix(plan: jobs_pb2.PlanRef, job_id: str, page: int) -> str:
    """Prefix of a page's tiles: ``…/page-<n>_files/`` (``<level>/<col>_<row>.jpg`` follow)."""
    return f"{tiles_prefix(plan, job_id)}{page_name(page)}_files/"


def overlay_name(page: int) -> str:
    """Base name of a page's overlay over its previous version:
    ``page-<n>.overlay`` (``.json`` follows)."""
    return f"{page_name(page)}.overlay"


def overlay_pyramid(page: int, previous_job_id: str, previous_page: int) -> str:
    """Base name of the pyramid of a page's overlay over one version:
    ``page-<n>.overlay-<previous job>-<previous page>`` (``.dzi`` and
    ``_files/`` follow). Named by the version, so that an overlay made
    while the job ran over a version its end did not confirm never shares
    tiles with the one made then."""
    return f"{overlay_name(page)}-{previous_job_id}-{previous_page}"


def overlay_key(plan: jobs_pb2.PlanRef, job_id: str, page: int) -> str:
    """A page's overlay: the transform and changes (docs/revisions.md),
    written after its pyramid."""
    return f"{tiles_prefix(plan, job_id)}{overlay_name(page)}.json"


#: The most a page's word sidecar is read at (bytes, stored and decompressed):
#: a dense sheet's is well under 1 MiB.
MAX_WORDS_BYTES = 16 << 20


def words_key(plan: jobs_pb2.PlanRef, job_id: str, page: int) -> str:
    """A PDF page's words with their boxes (docs/sheets.md), gzipped JSON,
    read at most :data:`MAX_WORDS_BYTES`."""
    return f"{tiles_prefix(plan, job_id)}{page_name(page)}.words.json.gz"


def search_key(plan: jobs_pb2.PlanRef, job_id: str) -> str:
    """The job's search index: its pages' words in SQLite FTS5 (docs/sheets.md)."""
    return f"{tiles_prefix(plan, job_id)}search.sqlite"


def sheets_key(plan: jobs_pb2.PlanRef, job_id: str) -> str:
    """The job's sheet index, as ``GET /v1/jobs/{id}/sheets`` returns it."""
    return f"{tiles_prefix(plan, job_id)}sheets.json"


def manifest_key(plan: jobs_pb2.PlanRef, job_id: str) -> str:
    return f"{tiles_prefix(plan, job_id)}manifest.json"


def register_key(plan: jobs_pb2.PlanRef) -> str:
    """The plan's register of its complete jobs' sheets (docs/revisions.md)."""
    return f"{plan_tiles_prefix(plan)}register.json"


def current_key(plan: jobs_pb2.PlanRef) -> str:
    return f"{plan_tiles_prefix(plan)}current.json"


#: A variant's name: thumbnail, icon, display, webp-<px>, overview.
VARIANT_NAME = re.compile(r"(thumbnail|icon|display|overview|webp-[1-9][0-9]{0,3})")


def variant_key(plan: jobs_pb2.PlanRef, job_id: str, page: int, name: str, fmt: str) -> str:
    """Where one of a page's variants is stored (planzoom/engines/variants.py)."""
    if not is_variant(name, fmt):
        raise ValueError(f"not a variant: {name}.{fmt}")
    return f"{tiles_prefix(plan, job_id)}{page_name(page)}.{name}.{fmt}"


#: A rendition's name (it becomes a directory of the preview).
RENDITION_NAME = re.compile(r"[1-9][0-9]{1,3}p")


def preview_prefix(plan: jobs_pb2.PlanRef, job_id: str) -> str:
    """Where a video job's HLS files are."""
    return f"previews/{_plan_path(plan)}/{check_id('job_id', job_id)}/"


def with_keys(job: jobs_pb2.Job) -> jobs_pb2.Job:
    """A copy of ``job`` with :func:`derive_keys` applied: the record as
    planzoom's APIs and manifest.json show it."""
    out = jobs_pb2.Job()
    out.CopyFrom(job)
    derive_keys(out, out)
    return out


def derive_keys(job: jobs_pb2.Job, into: jobs_pb2.Job) -> None:
    """Set, on each page in ``into.pages`` (``job`` itself, or a message
    holding some of its pages, e.g. a WatchJob delta), the S3 keys of the
    page's outputs, which follow from ``job`` and the page number: its
    ``.dzi`` (or its archive) once DONE, its variants, a video's HLS files.

    They are never reported by a stage nor kept in the stored record: with
    the longest ids and every variant they were 85 % of a 2,000-page record,
    which then no longer fit a NATS message."""
    if not job.HasField("plan"):
        return
    video = job.source_kind in VIDEO_KINDS
    prefix = tiles_prefix(job.plan, job.job_id)
    hls = preview_prefix(job.plan, job.job_id) if video else ""
    for page in into.pages:
        base = f"{prefix}{page_name(page.page)}"
        page.ClearField("dzi_key")
        page.ClearField("archive_key")
        if page.state == jobs_pb2.PAGE_STATE_DONE and not video:
            if is_archive(job.options):
                page.archive_key = f"{base}.{ARCHIVE_SUFFIX}"
            else:
                page.dzi_key = f"{base}.dzi"
        for variant in page.variants:
            if is_variant(variant.name, variant.format):
                variant.key = f"{base}.{variant.name}.{variant.format}"
            else:  # never stored (the fold refuses it): nothing to point at
                variant.ClearField("key")
        if video and page.video.renditions:
            for rendition in page.video.renditions:
                rendition.playlist_key = f"{hls}{rendition.name}/index.m3u8"
            page.video.master_key = f"{hls}master.m3u8"
            page.video.poster_key, page.video.thumbnail_key = (f"{hls}poster.jpg",
                                                               f"{hls}thumbnail.jpg")


def clear_keys(page: jobs_pb2.PageRecord) -> None:
    """Clear every key :func:`derive_keys` sets: a stage's report never
    names where a page's outputs are, whatever it carries."""
    page.ClearField("dzi_key")
    page.ClearField("archive_key")
    for variant in page.variants:
        variant.ClearField("key")
    if page.HasField("video"):
        for rendition in page.video.renditions:
            rendition.ClearField("playlist_key")
        for field in ("master_key", "poster_key", "thumbnail_key"):
            page.video.ClearField(field)


@functools.lru_cache(maxsize=256)  # a handful of names in use; reports are untrusted
def is_variant(name: str, fmt: str) -> bool:
    """True if ``<name>.<fmt>`` is a variant :func:`variant_key` accepts."""
    return bool(VARIANT_NAME.fullmatch(name)) and fmt in ("jpg", "webp")
