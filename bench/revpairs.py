"""Pairing and registration on real re-issued sheets: ``python -m
bench.revpairs [PAIRS.json] [--pdfs DIR] [--dpi 150] [--out DIR]``.

PAIRS is a list of ``{"older", "older_page", "newer", "newer_page"}``
(PDF files in ``--pdfs``, default beside PAIRS): the same sheet issued
twice, as a person confirmed by eye; by default the one real pair in
tests/fixtures/revisions. For each pair, both files are read as
two jobs of one plan would be (every page's words and sheet identity,
planzoom.engines.sheet_set) and paired (planzoom.engines.revisions): is the
newer page the next version of the older one, and how was it paired? Then
the two pages are drawn at ``--dpi`` and laid over each other
(planzoom.engines.overlay). A real pair has no known transform, so two
figures stand for its accuracy: the residual (median distance between the
words printed once on both sheets, where the transform puts the older one
and where the newer one is; pixels at ``--dpi``) and the disagreement
between the transform found from words and the one found from the line
work alone (over a 20 x 20 grid of the sheet: median and p95). With
``--out``, each overlay is saved as a JPEG to look at.
How it is measured and the last figures: docs/revisions.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import cv2
import numpy as np
import pypdfium2 as pdfium

from bench.overlay import draw, grid
from planzoom.engines.overlay import RegistrationFailed, overlay, register
from planzoom.engines.revisions import page_summary, sheet_history, sketch
from planzoom.engines.sheet_set import identify_set
from planzoom.engines.sheets import page_candidates
from planzoom.engines.text import read_words
from planzoom.pages import raster_size


def read_set(path: str, dpi: float, job_id: str) -> dict:
    """The register's entry for a PDF read as one job: its pages' summaries."""
    doc = pdfium.PdfDocument(path)
    cands, sketches, digests = {}, {}, {}
    for n in range(1, len(doc) + 1):
        page = doc[n - 1]
        w, h = raster_size(*page.get_size(), dpi)
        words = read_words(page, w, h)
        cands[n] = page_candidates(words)
        sketches[n] = sketch(x.text for x in words.words)
        digests[n] = hashlib.sha256(" ".join(x.text for x in words.words).encode()).hexdigest()
        page.close()
    doc.close()
    pages = [page_summary(s.page, s.number or "", s.title or "", digests[s.page],
                          sketches[s.page], s.revision or "", s.issued or "")
             for s in identify_set(cands)]
    return {"job_id": job_id, "pages": pages}


def paired(older: dict, newer: dict, older_page: int, newer_page: int) -> tuple[bool, str]:
    """Whether the newer page follows the older one in the plan's history,
    and how it was paired ("" when it was not)."""
    for sheet in sheet_history([older, newer]):
        versions = sheet["versions"]
        for i, v in enumerate(versions[:-1]):
            if v["job_id"] == newer["job_id"] and v["page"] == newer_page:
                prev = versions[i + 1]
                return (prev["job_id"], prev["page"]) == (older["job_id"], older_page), \
                    v["paired_by"]
    return False, ""


def disagreement(a: list, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distances (pixels) between where two transforms put a 20 x 20 grid."""
    pts = grid(shape)
    ma = np.array(a).reshape(2, 3)
    return np.linalg.norm((pts @ ma[:, :2].T + ma[:, 2]) - (pts @ b[:, :2].T + b[:, 2]), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="?", default=os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "revisions", "pairs.json"))
    ap.add_argument("--pdfs", help="where the pairs' PDFs are (default: beside PAIRS)")
    ap.add_argument("--dpi", type=float, default=150)
    ap.add_argument("--out", help="save each overlay here as a JPEG")
    a = ap.parse_args()
    pdfs = a.pdfs or os.path.dirname(os.path.abspath(a.pairs))
    pairs = json.load(open(a.pairs, encoding="utf-8"))
    sets: dict[tuple[str, str], dict] = {}
    rows, right, residuals, agree = [], 0, [], []
    for i, pr in enumerate(pairs):
        for name, tag in ((pr["older"], "a"), (pr["newer"], "b")):
            if (name, tag) not in sets:  # job ids sort older first, as the register does
                sets[name, tag] = read_set(os.path.join(pdfs, name), a.dpi, f"{tag}-{name}")
        older, newer = sets[pr["older"], "a"], sets[pr["newer"], "b"]
        ok, how = paired(older, newer, pr["older_page"], pr["newer_page"])
        right += ok
        prev, prev_words = draw(os.path.join(pdfs, pr["older"]), pr["older_page"], a.dpi)
        cur, cur_words = draw(os.path.join(pdfs, pr["newer"]), pr["newer_page"], a.dpi)
        started = time.perf_counter()
        try:
            result, image = overlay(prev, cur, 1.0, 1.0, prev_words, cur_words)
        except RegistrationFailed as e:
            rows.append((pr["newer"][:40], pr["newer_page"], ok, how, "failed", None, None, None,
                         0, time.perf_counter() - started, str(e)[:40]))
            continue
        seconds = time.perf_counter() - started
        gap = None
        if result.method == "words":  # else there is no second way to compare with
            try:
                alone, _ = register(prev, cur, 1.0, 1.0)
                gap = disagreement(result.transform, alone, cur.shape)
                agree.extend(gap)
            except RegistrationFailed:
                pass
        if result.residual_px is not None:
            residuals.append(result.residual_px)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            k = 1600 / max(image.shape[:2])
            small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            cv2.imwrite(os.path.join(a.out, f"{i:02d}-{pr['newer'][:-4]}.jpg"),
                        cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        rows.append((pr["newer"][:40], pr["newer_page"], ok, how, result.method,
                     result.residual_px, None if gap is None else float(np.median(gap)),
                     None if gap is None else float(np.percentile(gap, 95)),
                     len(result.changes), seconds, ""))
    print(f"{'newer sheet':40} {'pg':>2} {'paired':>6} {'by':8} {'method':9} {'resid':>6} "
          f"{'vs lines med':>12} {'p95':>7} {'changes':>7} {'s':>5}")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        print(f"{r[0]:40} {r[1]:>2} {'yes' if r[2] else 'NO':>6} {r[3] or '-':8} {r[4]:9} "
              f"{fmt(r[5], '6.2f'):>6} {fmt(r[6], '12.2f'):>12} {fmt(r[7], '7.2f'):>7} "
              f"{r[8]:>7} {r[9]:5.2f} {r[10]}")
    print(f"\n{len(pairs)} real pairs at {a.dpi:g} DPI: paired right {right} of {len(pairs)}; "
          f"word residual median {np.median(residuals):.2f} px over {len(residuals)} overlays; "
          f"words and line work alone agree within 3 px over the whole sheet (p95) on "
          f"{sum(1 for r in rows if r[7] is not None and r[7] <= 3)} of "
          f"{sum(1 for r in rows if r[7] is not None)} pairs registered from words "
          f"(all grid points: median {np.median(agree):.2f} px)")


if __name__ == "__main__":
    main()
