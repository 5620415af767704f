"""A job as an IIIF Presentation API 3.0 Manifest
(https://iiif.io/api/presentation/3.0/), built from its record and its
sheet index: pure functions, no I/O (the routes are in :mod:`.presentation`).

What a canvas holds (docs/iiif.md): its page's full-resolution size in
pixels (a video's: its frame size and ``duration`` in seconds), a label
from the sheet index ("A-201 · Second floor plan", as the viewer's strip
shows it; "Page N" on a page with no sheet number), the page's thumbnail,
a painting annotation whose body carries the page's Image API 3.0 service
(level 2) or a video's HLS rendition, the page's word boxes as ``seeAlso``
and its callouts as ``linking`` annotations to the sheets they name.
The manifest has a Range per discipline and the Content Search services.

Identifiers (manifest, canvases, ranges, annotations) are stable:
``{base}/iiif/3/jobs/{job_id}/…``. What a client fetches (image services,
thumbnails, renderings, word boxes, search, annotation pages) carries a
signed link of the job (:class:`Urls`), in the path for IIIF services and
as ``?cap=`` for the gateway's ``/v1`` files, so it works with no header
until the link expires.

iiif-prezi3 models every shape built here and the unit tests validate each
against it; it is not used to build, as it pins Pillow<=12.0.0 (planzoom
needs 13) and its validating models take over a second for 2,000 canvases.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from planzoom.media import VIDEO_KINDS
from planzoom.sheets import sheet_json
from planzoom.states import finalized, job_state_name, page_state_name
from planzoom.v1 import jobs_pb2

PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
#: The media type a Presentation 3 document is served as (its section 6.1).
PRESENTATION_TYPE = f'application/ld+json;profile="{PRESENTATION_CONTEXT}"'
SEARCH1_PROFILE = "http://iiif.io/api/search/1/search"
HLS_TYPE = "application/vnd.apple.mpegurl"


@dataclass(frozen=True)
class Urls:
    """Where a job's resources are for one manifest: ``base`` is the
    gateway's URL (no trailing slash), ``cap`` the job's signed link."""

    base: str
    job_id: str
    cap: str

    @property
    def ids(self) -> str:
        """The prefix of the job's stable identifiers."""
        return f"{self.base}/iiif/3/jobs/{self.job_id}"

    @property
    def capped(self) -> str:
        """The prefix of the job's IIIF routes that work with no header."""
        return f"{self.base}/iiif/3/cap/{self.cap}/jobs/{self.job_id}"

    def canvas(self, page: int) -> str:
        return f"{self.ids}/canvas/{page}"

    def image_service(self, page: int) -> str:
        """Page ``page``'s Image API 3.0 service (its ``info.json`` under it)."""
        return f"{self.base}/iiif/3/cap/{self.cap}/{self.job_id}-{page}"

    def file(self, path: str) -> str:
        """A ``/v1/jobs/{id}/…`` file of the job with the link as ``?cap=``."""
        return f"{self.base}/v1/jobs/{self.job_id}/{path}?cap={quote(self.cap)}"


def lang(text: str, language: str = "none") -> dict:
    """A language map (Presentation 3.0 section 4.3)."""
    return {language: [text]}


def sentence(title: str | None) -> str:
    """A title in capitals in sentence case ("SITE PLAN" → "Site plan"); a
    title set in mixed case stays as printed (viewer.js does the same)."""
    if not title or title != title.upper():
        return title or ""
    low = title.lower()
    return low[:1].upper() + low[1:]


def canvas_label(page: int, sheet: dict | None) -> str:
    """"A-201 · Second floor plan"; "Page 3 · Cover" or "Page 3" for a page
    with no sheet number."""
    number = (sheet or {}).get("number")
    title = sentence((sheet or {}).get("title"))
    head = number or f"Page {page}"
    return f"{head} · {title}" if title else head


def sheets_by_page(job: jobs_pb2.Job, index: dict | None) -> dict[int, dict]:
    """Each page's sheet as ``sheets.json`` has it (``index``, with the
    callouts) or, without it, as the record has it (no callouts)."""
    if index is not None:
        return {s["page"]: s for s in index.get("sheets", [])}
    return {p.page: sheet_json(p.page, p.sheet) for p in job.pages if p.HasField("sheet")}


def is_pdf(job: jobs_pb2.Job) -> bool:
    """A PDF job (records from before ``source_kind`` existed are PDFs)."""
    return job.source_kind in ("", "pdf")


def _variant(record: jobs_pb2.PageRecord, name: str) -> jobs_pb2.Variant | None:
    return next((v for v in record.variants if v.name == name), None)


def _image(url: str, width: int, height: int, fmt: str = "image/jpeg") -> dict:
    return {"id": url, "type": "Image", "format": fmt, "width": width, "height": height}


def _xywh(box) -> str:
    x, y, w, h = box
    return f"xywh={x},{y},{w},{h}"


def callout_page(urls: Urls, page: int, sheet: dict | None,
                 labels: dict[int, str]) -> dict | None:
    """Page ``page``'s callouts as an AnnotationPage of ``linking``
    annotations: each targets the callout's box on this canvas; its body is
    the canvas of the sheet it names and, for viewers that list
    annotations by their text, a ``describing`` TextualBody ("3/S-201 →
    S-201 · Sections"). None when it has none."""
    refs = [r for r in (sheet or {}).get("references") or [] if r.get("box") and r.get("page")]
    if not refs:
        return None
    canvas = urls.canvas(page)
    items = []
    for k, r in enumerate(refs, 1):
        name = labels.get(r["page"], f"Page {r['page']}")
        text = f"{r.get('text') or r.get('number')} → {name}"
        items.append({
            "id": f"{canvas}/callout/{k}", "type": "Annotation", "motivation": "linking",
            "body": [{"id": urls.canvas(r["page"]), "type": "Canvas", "label": lang(name)},
                     {"type": "TextualBody", "value": text, "format": "text/plain",
                      "purpose": "describing"}],
            "target": f"{canvas}#{_xywh(r['box'])}"})
    return {"id": f"{urls.capped}/callouts/{page}", "type": "AnnotationPage", "items": items}


def _metadata(job: jobs_pb2.Job, record: jobs_pb2.PageRecord, sheet: dict | None) -> list:
    rows = [("Page", str(record.page))]
    for key, name in (("number", "Sheet number"), ("title", "Sheet title"),
                      ("discipline", "Discipline"), ("scale", "Scale")):
        if (sheet or {}).get(key):
            rows.append((name, str(sheet[key])))
    if record.width_pt and record.dpi and job.source_kind not in VIDEO_KINDS:
        rows.append(("Size", f"{record.width_pt / 72:.1f} × {record.height_pt / 72:.1f} in at "
                             f"{record.dpi:g} DPI"))
    rows.append(("State", page_state_name(record.state).lower()))
    return [{"label": lang(k, "en"), "value": lang(v)} for k, v in rows]


def _body(job: jobs_pb2.Job, record: jobs_pb2.PageRecord, urls: Urls) -> dict | None:
    """What paints the canvas: the page's image service once it is DONE,
    its overview before; a video's HLS rendition once transcoded."""
    n, done = record.page, record.state == jobs_pb2.PAGE_STATE_DONE
    if job.source_kind in VIDEO_KINDS or record.video.duration_seconds:
        if not done:
            return None
        return {"id": urls.file("video/master.m3u8"), "type": "Video", "format": HLS_TYPE,
                "width": record.width_px, "height": record.height_px,
                "duration": max(record.video.duration_seconds, 0.001)}
    if done:
        service = urls.image_service(n)
        body = _image(f"{service}/full/max/0/default.jpg", record.width_px, record.height_px)
        body["service"] = [{"id": service, "type": "ImageService3", "profile": "level2"}]
        return body
    overview = _variant(record, "overview")
    if overview is not None and record.state != jobs_pb2.PAGE_STATE_FAILED:
        return _image(urls.file(f"pages/{n}.overview.{overview.format}"), overview.width,
                      overview.height)
    return None


def canvas(job: jobs_pb2.Job, record: jobs_pb2.PageRecord, sheet: dict | None, urls: Urls,
           labels: dict[int, str]) -> dict:
    """The Canvas of one page (see the module docstring)."""
    n = record.page
    cid = urls.canvas(n)
    video = job.source_kind in VIDEO_KINDS or bool(record.video.duration_seconds)
    out = {"id": cid, "type": "Canvas", "label": lang(labels[n]),
           "width": max(1, record.width_px), "height": max(1, record.height_px)}
    if video:
        out["duration"] = max(record.video.duration_seconds, 0.001)
    out["metadata"] = _metadata(job, record, sheet)
    if record.state == jobs_pb2.PAGE_STATE_FAILED:
        out["summary"] = lang(f"This page failed: {record.error or 'see the job record'}", "en")
    thumb = _variant(record, "thumbnail")
    if video and record.video.thumbnail_key:
        out["thumbnail"] = [{"id": urls.file("video/thumbnail.jpg"), "type": "Image",
                             "format": "image/jpeg"}]
    elif thumb is not None:
        out["thumbnail"] = [_image(urls.file(f"pages/{n}.thumbnail.{thumb.format}"),
                                   thumb.width, thumb.height)]
    if is_pdf(job) and record.state == jobs_pb2.PAGE_STATE_DONE:
        out["seeAlso"] = [{"id": urls.file(f"pages/{n}/words"), "type": "Dataset",
                           "format": "application/json", "label": lang("Word boxes", "en")}]
    body = _body(job, record, urls)
    painting = [] if body is None else [{
        "id": f"{cid}/painting/1", "type": "Annotation", "motivation": "painting",
        "body": body, "target": cid}]
    out["items"] = [{"id": f"{cid}/painting", "type": "AnnotationPage", "items": painting}]
    callouts = callout_page(urls, n, sheet, labels)
    if callouts is not None:
        out["annotations"] = [callouts]
    return out


def ranges(urls: Urls, job: jobs_pb2.Job, sheets: dict[int, dict],
           labels: dict[int, str]) -> list[dict]:
    """A Range per discipline ("Architectural", …), sheets in page order,
    disciplines in the order the set first shows them; pages of no
    discipline in a last Range "Other sheets". None for a set with no
    discipline at all (photos, videos)."""
    groups: dict[str, list[int]] = {}
    for p in job.pages:
        discipline = (sheets.get(p.page) or {}).get("discipline") or ""
        groups.setdefault(discipline, []).append(p.page)
    if set(groups) <= {""}:
        return []
    out = []
    for discipline, pages in sorted(groups.items(), key=lambda kv: kv[0] == ""):
        name = discipline[:1].upper() + discipline[1:] if discipline else "Other sheets"
        slug = quote(discipline or "other", safe="")
        out.append({"id": f"{urls.ids}/range/{slug}", "type": "Range", "label": lang(name, "en"),
                    "items": [{"id": urls.canvas(n), "type": "Canvas",
                               "label": lang(labels[n])} for n in pages]})
    return out


def searchable(job: jobs_pb2.Job) -> bool:
    """True when the job has a search index: a PDF job that has ended
    (complete or failed) and whose outputs are written."""
    return (is_pdf(job) and finalized(job)
            and job.state != jobs_pb2.JOB_STATE_CANCELLED)


def search_services(urls: Urls) -> list[dict]:
    """Content Search 2.0 (``SearchService2``) and, for viewers that read
    only 1.0 (Mirador 4), the same search as Content Search 1.0."""
    return [{"id": f"{urls.capped}/search", "type": "SearchService2"},
            {"@id": f"{urls.capped}/search/1", "@type": "SearchService1",
             "profile": SEARCH1_PROFILE}]


def manifest(job: jobs_pb2.Job, index: dict | None, urls: Urls,
             manifest_id: str | None = None) -> dict:
    """The job's Manifest as a JSON-ready dict. ``index`` is the job's
    ``sheets.json`` (parsed) or None; ``manifest_id`` defaults to
    ``{base}/iiif/3/jobs/{job_id}/manifest``. Every page is a canvas, in
    page order, whether done, failed or still to come."""
    sheets = sheets_by_page(job, index)
    labels = {p.page: canvas_label(p.page, sheets.get(p.page)) for p in job.pages}
    name = " · ".join(x for x in (job.plan.plan, job.source_name) if x) or job.job_id
    state = job_state_name(job.state).lower()
    out = {
        "@context": PRESENTATION_CONTEXT,
        "id": manifest_id or f"{urls.ids}/manifest", "type": "Manifest",
        "label": lang(name),
        "summary": lang(f"{job.total_pages} pages, {job.completed_pages} done "
                        f"({state}); plan {job.plan.org}/{job.plan.project}/{job.plan.plan}",
                        "en"),
        "metadata": [{"label": lang(k, "en"), "value": lang(v)} for k, v in (
            ("Plan", f"{job.plan.org}/{job.plan.project}/{job.plan.plan}"),
            ("Source file", job.source_name or "(not named)"), ("Job", job.job_id),
            ("State", state), ("Pages", str(job.total_pages)))],
    }
    canvases = [canvas(job, p, sheets.get(p.page), urls, labels) for p in job.pages]
    first = next((c["thumbnail"] for c in canvases if "thumbnail" in c), None)
    if first:
        out["thumbnail"] = first
    if finalized(job) and job.completed_pages and job.source_kind not in VIDEO_KINDS:
        out["rendering"] = [{"id": urls.file("download"), "type": "Dataset",
                             "format": "application/zip",
                             "label": lang("The set's Deep Zoom pyramids and sheet index (zip)",
                                           "en")}]
    if searchable(job):
        out["service"] = search_services(urls)
    out["items"] = canvases
    structures = ranges(urls, job, sheets, labels)
    if structures:
        out["structures"] = structures
    return out
