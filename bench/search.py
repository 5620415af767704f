"""Search inside sheets at scale: ``python -m bench.search [--sheets N]
[--queries Q]``.

A job's search index of ``N`` sheets (default 1,000) is made from the
corpus's real pages (their words as the render stage reads them, pages
taken in turn until there are N) and put in place of the index of a real
job of an embedded stack; then ``Q`` queries (single words and two-word
phrases drawn from the index's own lines, a few misses) go through the
gateway (``GET /v1/search``, 4 at a time, warm: the index fetched once).
Beside it, the same queries answered by what one would write without an
index: every page's word sidecar held in memory, parsed, and scanned for
the words in a row. Prints latencies (ms) and the index's size and build
time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import pypdfium2 as pdfium

from bench.sheets import CORPUS
from bench.stacks import unthrottled
from planzoom import keys, search
from planzoom.engines.text import read_words
from planzoom.pages import raster_size
from planzoom.v1 import jobs_pb2
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY

SETS = ["arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf",
        "manypages-117p-vectorfigures-pypdf-geotopo.pdf",
        "arch-mos1-malm-desk-A2-autocad2016-quartz-pdfium-slow-michelagalassini-strumet.pdf",
        "arch-floorplan-a1-dense-offsetmediabox-scaledetection-dr.pdf",
        "manypages-352p-freeculture-pdfjs.pdf"]


def corpus_pages(n: int, dpi: float = 150.0) -> list[dict]:
    """``n`` word sidecars (as parsed JSON) of the corpus's pages, in turn."""
    docs = [pdfium.PdfDocument(str(Path(CORPUS) / name)) for name in SETS]
    pages = [(d, i) for d in docs for i in range(len(d))]
    out = []
    for k in range(n):
        doc, i = pages[k % len(pages)]
        page = doc[i]
        w, h = raster_size(*page.get_size(), dpi)
        out.append(json.loads(json.dumps(read_words(page, w, h).to_json())))
        page.close()
    return out


def _fold(t: str) -> str:
    t = unicodedata.normalize("NFKD", t)
    return "".join(c for c in t if not unicodedata.combining(c)).casefold()


def queries(pages: list[dict], count: int, seed: int = 7) -> list[str]:
    """Words and two-word phrases from the pages' lines, and a few misses."""
    rng = random.Random(seed)
    words = [w[0] for p in pages for w in p["words"] if len(w[0]) >= 4 and w[0].isalpha()]
    out = []
    for k in range(count):
        if k % 10 == 9:
            out.append(f"zq{k}xw")  # nothing has it
        elif k % 3 == 2:
            p = rng.choice(pages)
            ws = p["words"]
            pairs = [(a[0], b[0]) for a, b in zip(ws, ws[1:], strict=False)
                     if a[0].isalpha() and b[0].isalpha()]
            if pairs:
                out.append(" ".join(rng.choice(pairs)))
                continue
            out.append(rng.choice(words))
        else:
            out.append(rng.choice(words))
    return out


def scan(sidecars: list[bytes], q: str) -> int:
    """The answer without an index: every sidecar parsed and scanned for
    the query's words in a row (prefix on the last). Returns hits."""
    terms = _fold(q).split()
    hits = 0
    for blob in sidecars:
        words = [_fold(w[0]) for w in json.loads(gzip.decompress(blob))["words"]]
        for i in range(len(words) - len(terms) + 1):
            if all(words[i + k] == terms[k] for k in range(len(terms) - 1)) and \
                    words[i + len(terms) - 1].startswith(terms[-1]):
                hits += 1
    return hits


def quantiles(values: list[float]) -> str:
    v = sorted(values)
    q = lambda x: 1000 * v[min(len(v) - 1, int(x * len(v)))]  # noqa: E731
    return f"p50 {q(0.5):7.1f}  p95 {q(0.95):7.1f}  max {1000 * v[-1]:7.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sheets", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=300)
    a = ap.parse_args()

    print(f"reading the words of {a.sheets} corpus pages…", flush=True)
    pages = corpus_pages(a.sheets)
    work = Path(tempfile.mkdtemp(prefix="planzoom-bench-search-"))
    index = work / "search.sqlite"
    t0 = time.perf_counter()
    lines = search.build(str(index), [(n, p, None) for n, p in enumerate(pages, start=1)])
    build = time.perf_counter() - t0
    qs = queries(pages, a.queries)

    with unthrottled(work) as (stack, client):
        plan = jobs_pb2.PlanRef(org="bench", project="search", plan="big")
        job_id = client.submit(str(Path(CORPUS) / SETS[0]), plan,
                               jobs_pb2.JobOptions(dpi=20)).job_id
        for _ in client.follow(job_id):
            pass  # to its end
        s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
        s3.upload_file(str(index), stack.bucket, keys.search_key(plan, job_id))
        headers = {"Authorization": f"Bearer {stack.token('bench', 'viewer')}"}
        with httpx.Client(base_url=stack.gateway_url, timeout=60, headers=headers) as http:
            first = time.perf_counter()
            http.get("/v1/search", params={"job_id": job_id, "q": "plan"}).raise_for_status()
            cold = time.perf_counter() - first

            def one(q: str) -> tuple[float, int]:
                t = time.perf_counter()
                r = http.get("/v1/search", params={"job_id": job_id, "q": q, "limit": 100})
                r.raise_for_status()
                return time.perf_counter() - t, len(r.json()["hits"])

            with ThreadPoolExecutor(4) as pool:
                timed = list(pool.map(one, qs))
        sidecars = [gzip.compress(json.dumps(p).encode()) for p in pages]
        scans = []
        for q in qs[: max(10, a.queries // 10)]:
            t = time.perf_counter()
            scan(sidecars, q)
            scans.append(time.perf_counter() - t)
    words = sum(len(p["words"]) for p in pages)
    print(f"\nsearch over {a.sheets} sheets ({words:,} words, {lines:,} lines; index "
          f"{index.stat().st_size / 2**20:.1f} MiB, built in {build:.1f} s); {len(qs)} queries, "
          "4 at a time, ms:")
    print(f"  gateway, SQLite FTS5 index   {quantiles([t for t, _ in timed])}  "
          f"(first query {1000 * cold:.0f} ms: the index fetched)")
    print(f"  scan of every word sidecar   {quantiles(scans)}  ({len(scans)} of the queries)")
    hits = [n for _, n in timed]
    print(f"  hits a query: median {sorted(hits)[len(hits) // 2]}, none for "
          f"{sum(1 for n in hits if n == 0)} of {len(hits)}")


if __name__ == "__main__":
    main()
