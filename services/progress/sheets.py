"""A PDF job's sheet index and search index, made when the job ends, from
what its pages' renders left: each page's sheet candidates
(``work/<job>/page-N.sheet.json``) and words (``page-N.words.json.gz``).

Blocking (S3 reads, SQLite): call from a thread. Idempotent: a finalize
that runs again (the sweep) makes the same.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from planzoom import keys, search
from planzoom.engines import revisions
from planzoom.engines.sheet_set import identify_set
from planzoom.engines.titleblock import discipline, number_key
from planzoom.errors import FailedPrecondition, NotFound
from planzoom.sheets import BOX_FIELDS, sheet_from_json, sheet_json
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2

log = logging.getLogger(__name__)

#: Largest candidates file read (bytes; the engine writes
#: far less: MAX_WORDS words).
MAX_CANDIDATES_BYTES = 1 << 20
#: Largest current.json read (a plan's sheets and their versions).
MAX_CURRENT_BYTES = 64 << 20
#: S3 reads at once.
READERS = 8
#: How long a plan's current.json read for a page done is used again (seconds).
CURRENT_SECONDS = 10.0
#: Longest sheet number or title a person may set, in characters.
MAX_FIELD_CHARS = 200


class PageNotFound(NotFound):
    reason = "SHEET_NOT_FOUND"


class NoSheet(FailedPrecondition):
    reason = "NOT_A_SHEET"


def correct(sheet: jobs_pb2.Sheet, number: str, title: str) -> None:
    """Set ``sheet`` to what a person read: source ``user``, confidence 1,
    nothing left to review; the number's box is kept where it was read (it
    still marks the title block)."""
    sheet.number, sheet.title = number, title
    sheet.discipline = discipline(number or None, title or None) or ""
    sheet.source, sheet.confidence, sheet.needs_review = "user", 1.0, False


def write_correction(store: ObjectStore, job: jobs_pb2.Job, page: int) -> None:
    """Put a person's correction of ``page`` (in ``job``'s record) into the
    ended job's ``sheets.json`` and ``manifest.json`` (the references and
    boxes the record does not keep stay as they were)."""
    sheet = job.pages[page - 1].sheet
    key = keys.sheets_key(job.plan, job.job_id)
    doc = store.get_json(key, keys.MAX_WORDS_BYTES) or {"job_id": job.job_id, "sheets": []}
    rows = {int(r["page"]): r for r in doc.get("sheets", [])}
    row = rows.setdefault(page, {"page": page, "references": [], "box": None,
                                 "title_box": None, "scale": None})
    row.update({"number": sheet.number or None, "title": sheet.title or None,
                "discipline": sheet.discipline or None, "confidence": 1.0,
                "needs_review": False, "source": "user"})
    doc["sheets"] = [rows[n] for n in sorted(rows)]
    store.put_bytes(key, json.dumps(doc, ensure_ascii=False, indent=1).encode(),
                    "application/json")
    manifest_key = keys.manifest_key(job.plan, job.job_id)
    manifest = store.get_json(manifest_key, keys.MAX_WORDS_BYTES * 4)
    if manifest and len(manifest.get("pages", [])) >= page:
        entry = manifest["pages"][page - 1].setdefault("sheet", {})
        entry.update({"number": sheet.number, "title": sheet.title,
                      "discipline": sheet.discipline, "confidence": 1.0,
                      "needs_review": False, "source": "user"})
        store.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode(),
                        "application/json")


def current_sheets(store: ObjectStore, plan: jobs_pb2.PlanRef) -> dict | None:
    """The plan's current set: ``{"job_id": newest complete job, "sheets":
    [{"job_id", "page", "versions", "sheet": the page's row of its job's
    sheets.json}]}`` from ``current.json`` (services.progress.register),
    or None when the plan has no complete job yet."""
    current = store.get_json(keys.current_key(plan), MAX_CURRENT_BYTES)
    if not current:
        return None
    entries = current.get("sheets")
    if entries is None:  # a current.json from before plans kept registers
        entries = [{"job_id": current.get("job_id", ""), "page": p + 1, "versions": []}
                   for p in range(int(current.get("total_pages", 0)))]
    jobs = sorted({e["job_id"] for e in entries})
    with ThreadPoolExecutor(READERS) as pool:
        docs = dict(zip(jobs, pool.map(
            lambda j: store.get_json(keys.sheets_key(plan, j), keys.MAX_WORDS_BYTES) or {}, jobs),
            strict=True))
    rows = {(j, int(r["page"])): r for j, d in docs.items() for r in d.get("sheets", [])}
    out = []
    for e in entries:
        row = rows.get((e["job_id"], int(e["page"])))
        if row is not None or e.get("versions"):
            out.append({**e, "sheet": row or {"page": e["page"], "number": e.get("number"),
                                              "title": e.get("title")}})
    return {"job_id": current.get("job_id", ""), "sheets": out}


class CurrentSets:
    """Plans' ``current.json``, each read again once it is
    :data:`CURRENT_SECONDS` old: a running job's pages, done one after
    another, look up the same plan's (which changes only when a job of the
    plan completes; a stale one only costs an overlay the job's end makes
    again). Holds at most ``plans`` of them (each up to
    :data:`MAX_CURRENT_BYTES`)."""

    def __init__(self, store: ObjectStore, plans: int = 8):
        self.store, self.plans = store, plans
        self._read: dict[str, tuple[float, dict | None]] = {}

    def get(self, plan: jobs_pb2.PlanRef) -> dict | None:
        key = keys.current_key(plan)
        at, doc = self._read.get(key, (0.0, None))
        if time.monotonic() - at > CURRENT_SECONDS:
            doc = self.store.get_json(key, MAX_CURRENT_BYTES)
            if len(self._read) >= self.plans:
                self._read.clear()
            if doc:  # a plan with none yet may have one any moment
                self._read[key] = (time.monotonic(), doc)
        return doc


def provisional_previous(store: ObjectStore, current_sets: CurrentSets, job: jobs_pb2.Job,
                         page: int) -> tuple[str, int] | None:
    """The version a page just done (its job still running) most likely
    revises: the one sheet of the plan's current set, from another job,
    whose number is the page's own (read from its candidates alone, without
    the rest of the set), unless its raster is the same (unchanged). None
    when there is no such sheet. The job's end pairs the whole set again
    (:func:`services.progress.register.join_plan`)."""
    if not _is_pdf(job) or not 1 <= page <= len(job.pages):
        return None
    candidates = store.get_json(keys.sheet_candidates_key(job.job_id, page),
                                MAX_CANDIDATES_BYTES)
    if not candidates:
        return None
    number = identify_set({page: candidates})[0].number
    current = current_sets.get(job.plan) if number else None
    if not current:
        return None
    key = number_key(number)
    same = [e for e in current.get("sheets") or []
            if e.get("number") and number_key(e["number"]) == key]
    if len(same) != 1 or same[0].get("job_id") in ("", job.job_id):
        return None  # no sheet, or several, with that number: the set decides
    digest = job.pages[page - 1].content_digest
    if digest and same[0].get("digest") == digest:
        return None  # unchanged
    return same[0]["job_id"], int(same[0]["page"])


def _is_pdf(job: jobs_pb2.Job) -> bool:
    return job.source_kind in ("", "pdf")


def identify(store: ObjectStore, job: jobs_pb2.Job) -> int:
    """Set ``job.pages[].sheet`` of a PDF job's DONE pages from their
    candidates and the set as a whole (planzoom.engines.sheet_set). A page a
    person corrected (source ``user``) keeps what they set. Returns the
    pages given a sheet number, -1 if no page's candidates were left to
    read."""
    if not _is_pdf(job) or job.state == jobs_pb2.JOB_STATE_CANCELLED:
        return 0
    done = [p.page for p in job.pages if p.state == jobs_pb2.PAGE_STATE_DONE]
    with ThreadPoolExecutor(READERS) as pool:
        found = list(pool.map(lambda n: store.get_json(
            keys.sheet_candidates_key(job.job_id, n), MAX_CANDIDATES_BYTES), done))
    candidates = dict(zip(done, found, strict=True))
    if done and not any(found):
        return -1  # nothing left to read: work/ is gone (a finalize that runs again)
    numbered = 0
    for sheet in identify_set(candidates):
        page = job.pages[sheet.page - 1]
        if page.sheet.source == "user":
            numbered += bool(page.sheet.number)
            continue
        record = sheet_from_json(sheet.to_json())
        record.confidence = sheet.confidence  # to_json rounds it for people
        page.sheet.CopyFrom(record)
        numbered += bool(sheet.number)
    return numbered


def sheets_json(job: jobs_pb2.Job) -> bytes:
    """``sheets.json``: every page's sheet identity, in the shape of ``GET
    /v1/jobs/{id}/sheets`` (docs/sheets.md); a page with none (an image, a
    failed page) has ``number`` null and ``source`` "none"."""
    out = [sheet_json(p.page, p.sheet) for p in job.pages]
    return json.dumps({"job_id": job.job_id, "sheets": out}, ensure_ascii=False,
                      indent=1).encode()


def compact(sheet: jobs_pb2.Sheet) -> jobs_pb2.Sheet:
    """What the job record in KV keeps of a sheet: everything but the
    references and every box but the number's (``sheets.json`` and
    ``manifest.json`` have those), so that a 2,000-page record stays
    within a NATS message."""
    out = jobs_pb2.Sheet()
    out.CopyFrom(sheet)
    out.ClearField("references")
    for field in BOX_FIELDS:
        if field != "box":
            out.ClearField(field)
    return out


def read_set(store: ObjectStore, job: jobs_pb2.Job) -> dict[int, str]:
    """Identify the sheets of a PDF job that did not end cancelled and store
    its search index. Sets ``job.pages[].sheet``. Returns a sketch of each
    page's words (planzoom.engines.revisions.sketch; pages with no words left out)."""
    if not _is_pdf(job) or job.state == jobs_pb2.JOB_STATE_CANCELLED:
        return {}
    if identify(store, job) < 0:
        # A finalize run again after work/ was emptied: what the first run
        # stored stands; the record gets it back from there.
        doc = store.get_json(keys.sheets_key(job.plan, job.job_id), keys.MAX_WORDS_BYTES)
        if doc:
            _restore(job, doc)
        return {}
    return index(store, job)


def write(store: ObjectStore, job: jobs_pb2.Job) -> None:
    """Store a PDF job's ``sheets.json`` (once :func:`read_set` and, for a
    complete job, the plan's register have set its sheets)."""
    if _is_pdf(job) and job.state != jobs_pb2.JOB_STATE_CANCELLED:
        store.put_bytes(keys.sheets_key(job.plan, job.job_id), sheets_json(job),
                        "application/json")


def _restore(job: jobs_pb2.Job, doc: dict) -> None:
    """Set ``job.pages[].sheet`` back from a stored ``sheets.json``."""
    for s in doc.get("sheets", []):
        n = int(s.get("page", 0))
        if 1 <= n <= len(job.pages) and job.pages[n - 1].sheet.source != "user":
            job.pages[n - 1].sheet.CopyFrom(sheet_from_json(s))


def index(store: ObjectStore, job: jobs_pb2.Job) -> dict[int, str]:
    """Build the job's search index from its DONE pages' word sidecars and
    store it at ``search.sqlite`` (planzoom.search; nothing stored for a job
    with no words). Returns each page's sketch of its words
    (planzoom.engines.revisions.sketch), pages with none left out."""
    if not _is_pdf(job) or job.state == jobs_pb2.JOB_STATE_CANCELLED:
        return {}
    done = [p for p in job.pages if p.state == jobs_pb2.PAGE_STATE_DONE]

    def read(page: jobs_pb2.PageRecord):
        doc = store.get_json(keys.words_key(job.plan, job.job_id, page.page),
                             keys.MAX_WORDS_BYTES, gzipped=True)
        return (page.page, doc, page.sheet.number or None) if doc else None

    with ThreadPoolExecutor(READERS) as pool:
        pages = [p for p in pool.map(read, done) if p]
    if not pages:
        return {}
    sketches = {n: revisions.sketch(w[0] for w in doc.get("words", [])) for n, doc, _ in pages}
    fd, path = tempfile.mkstemp(suffix=".sqlite")
    os.close(fd)
    try:
        search.build(path, pages)
        store.upload_file(path, keys.search_key(job.plan, job.job_id), "application/vnd.sqlite3")
        return {n: s for n, s in sketches.items() if s}
    finally:
        os.unlink(path)
