"""How long the gateway takes to build a big set's IIIF manifest:
``python -m bench.manifest [--pages N] [--runs R]``.

A synthetic job record of ``N`` pages (default 2,000): A1 sheets at 300
DPI, every page done with its thumbnail and overview, a sheet number,
title and discipline each (five disciplines in turn) and four callouts to
other sheets, the shape ``sheets.json`` gives. The manifest is built
``R`` times (default 5) as the gateway builds it
(:func:`services.gateway.iiif.manifest.manifest`, then JSON, then gzip as
it is sent to a client that accepts it); the table gives the median of the
runs for each step and the whole, and the document's size. For
comparison, one validation of the result by iiif-prezi3's model (what
building it with that library would at least cost), if installed. Target:
the whole under 1 s for 2,000 pages.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time

from planzoom.v1 import jobs_pb2
from services.gateway.iiif import manifest as build
from services.gateway.iiif.presentation import GZIP_LEVEL

DISCIPLINES = ["architectural", "structural", "mechanical", "electrical", "plumbing"]
TARGET_SECONDS = 1.0


def synthetic(pages: int) -> tuple[jobs_pb2.Job, dict]:
    """A complete PDF job of ``pages`` A1 pages at 300 DPI and its
    ``sheets.json`` (numbers, titles, disciplines, four callouts a page)."""
    job = jobs_pb2.Job(job_id="0f" * 11, state=jobs_pb2.JOB_STATE_COMPLETE, source_kind="pdf",
                       source_name=f"synthetic-{pages}p.pdf", total_pages=pages,
                       completed_pages=pages,
                       plan=jobs_pb2.PlanRef(org="bench", project="tower", plan="set"))
    sheets = []
    for n in range(1, pages + 1):
        page = job.pages.add(page=n, state=jobs_pb2.PAGE_STATE_DONE, width_pt=2384,
                             height_pt=1684, dpi=300, width_px=9934, height_px=7017,
                             tile_size=256, overlap=1, format="jpg", levels=15)
        page.variants.add(name="thumbnail", format="jpg", width=300, height=212)
        page.variants.add(name="overview", format="jpg", width=621, height=439, level=10)
        discipline = DISCIPLINES[n % len(DISCIPLINES)]
        sheets.append({
            "page": n, "number": f"{discipline[0].upper()}-{100 + n}",
            "title": f"LEVEL {n} {discipline.upper()} PLAN", "discipline": discipline,
            "references": [{"number": f"X-{k}", "page": (n + 37 * k) % pages + 1,
                            "text": f"{k}/X-{k}", "box": [500 * k, 800, 90, 70]}
                           for k in range(1, 5)]})
    return job, {"job_id": job.job_id, "sheets": sheets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    a = parser.parse_args()
    job, index = synthetic(a.pages)
    urls = build.Urls("http://127.0.0.1:8080", job.job_id, "x" * 120)
    builds, encodes, zips, size, gzipped, doc = [], [], [], 0, 0, None
    for _ in range(a.runs):
        t0 = time.perf_counter()
        doc = build.manifest(job, index, urls)
        t1 = time.perf_counter()
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        t2 = time.perf_counter()
        gzipped = len(gzip.compress(body, GZIP_LEVEL))
        builds.append(t1 - t0)
        encodes.append(t2 - t1)
        zips.append(time.perf_counter() - t2)
        size = len(body)
    whole = [b + e + z for b, e, z in zip(builds, encodes, zips, strict=True)]
    rows = [("build (record → dict)", statistics.median(builds)),
            ("JSON encoding", statistics.median(encodes)),
            (f"gzip (level {GZIP_LEVEL})", statistics.median(zips)),
            ("manifest, whole", statistics.median(whole))]
    try:
        from iiif_prezi3 import Manifest

        t0 = time.perf_counter()
        Manifest(**doc)
        rows.append(("iiif-prezi3 model, one validation", time.perf_counter() - t0))
    except ImportError:
        pass
    callouts = sum(len(s["references"]) for s in index["sheets"])
    print(f"\nIIIF manifest of {a.pages:,} pages ({callouts:,} callouts, {size / 1e6:.1f} MB, "
          f"{gzipped / 1e6:.1f} MB gzipped as sent), median of {a.runs} runs")
    print(f"| {'step':<34} | seconds |\n|{'-' * 36}|---------|")
    for name, seconds in rows:
        print(f"| {name:<34} | {seconds:7.3f} |")
    verdict = "under" if statistics.median(whole) < TARGET_SECONDS else "OVER"
    print(f"\n{verdict} the {TARGET_SECONDS:g} s target")


if __name__ == "__main__":
    main()
