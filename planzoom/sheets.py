"""The sheet index's JSON shape, as ``sheets.json`` stores it and the HTTP
routes answer (docs/sheets.md): a :class:`jobs_pb2.Sheet` per page, boxes
as ``[x, y, w, h]`` in the page's full-resolution pixels, absent values as
null."""

from __future__ import annotations

from planzoom.v1 import jobs_pb2


def _box_json(sheet_or_ref, field: str) -> list[int] | None:
    if not sheet_or_ref.HasField(field):
        return None
    b = getattr(sheet_or_ref, field)
    return [b.x, b.y, b.w, b.h]


def box(value) -> jobs_pb2.Box | None:
    """``[x, y, w, h]`` (or None) as a Box; negative values clamp to 0."""
    if not value:
        return None
    x, y, w, h = (max(0, int(v)) for v in value)
    return jobs_pb2.Box(x=x, y=y, w=w, h=h)


#: A Sheet's boxes other than its references'.
BOX_FIELDS = ("box", "title_box", "scale_box", "revision_box", "issued_box")

#: A SheetVersion's fields, as JSON names them too.
VERSION_FIELDS = ("job_id", "page", "number", "title", "revision", "issued", "paired_by",
                  "change")


def version_json(v: jobs_pb2.SheetVersion) -> dict:
    """A sheet's version in its plan: ``{"job_id", "page", "number",
    "title", "revision", "issued", "paired_by", "change"}`` (docs/revisions.md)."""
    return {f: getattr(v, f) for f in VERSION_FIELDS}


def version_from_json(row: dict) -> jobs_pb2.SheetVersion:
    """An entry of :func:`version_json` (absent values as empty) as a SheetVersion."""
    return jobs_pb2.SheetVersion(**{f: row.get(f) or (0 if f == "page" else "")
                                    for f in VERSION_FIELDS})


def sheet_json(page: int, s: jobs_pb2.Sheet) -> dict:
    """One page's entry: ``{"page", "number", "title", "discipline",
    "scale", "revision", "issued", "confidence", "needs_review", "source", "box", "title_box",
    "references": [{"number", "page", "box", "text", "target_box"}], "change",
    "paired_by", "previous", "duplicate_number"}`` (the last four against
    the plan's versions, docs/revisions.md; null until a complete job
    joins its plan)."""
    return {
        "page": page, "number": s.number or None, "title": s.title or None,
        "discipline": s.discipline or None, "scale": s.scale or None,
        "revision": s.revision or None, "issued": s.issued or None,
        "confidence": round(s.confidence, 3), "needs_review": s.needs_review,
        "source": s.source or "none", "box": _box_json(s, "box"),
        "title_box": _box_json(s, "title_box"),
        "references": [{"number": r.number, "page": r.page, "text": r.text,
                        "box": _box_json(r, "box"), "target_box": _box_json(r, "target_box")}
                       for r in s.references],
        "change": s.change or None, "paired_by": s.paired_by or None,
        "previous": version_json(s.previous) if s.HasField("previous") else None,
        "duplicate_number": s.duplicate_number,
    }


def sheet_from_json(row: dict) -> jobs_pb2.Sheet:
    """An entry of :func:`sheet_json` back as a Sheet."""
    sheet = jobs_pb2.Sheet(
        number=row.get("number") or "", title=row.get("title") or "",
        discipline=row.get("discipline") or "", scale=row.get("scale") or "",
        revision=row.get("revision") or "", issued=row.get("issued") or "",
        confidence=float(row.get("confidence") or 0), needs_review=bool(row.get("needs_review")),
        source=row.get("source") or "none", change=row.get("change") or "",
        paired_by=row.get("paired_by") or "",
        duplicate_number=bool(row.get("duplicate_number")))
    if row.get("previous"):
        sheet.previous.CopyFrom(version_from_json(row["previous"]))
    for field in BOX_FIELDS:
        b = box(row.get(field))
        if b is not None:
            getattr(sheet, field).CopyFrom(b)
    for r in row.get("references") or []:
        sheet.references.add(number=r["number"], page=int(r["page"]), text=r.get("text", ""),
                             box=box(r.get("box")), target_box=box(r.get("target_box")))
    return sheet
