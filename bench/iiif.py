"""IIIF Image API regions cut from a stored pyramid, beside DZI tiles:
``python -m bench.iiif [--regions N] [--tiles N] [--layout files|archive]
[--concurrency C]``.

An embedded stack converts the first sheet of the crayfishinn set (A1,
9933 x 7017 px at 300 DPI) into a pyramid; then, through the gateway, N
random 1024-pixel regions (``x,y,w,h/1024,/0/default.jpg``: a region
1024 x 2^k pixels wide at a random place, k from 0 to 3, so each is cut
from a different level) and N random DZI tiles of the same page's four
largest levels, C requests at a time (default 1). Latency is from sending
a request to its last byte. The gateway's peak RSS (its process tree,
sampled every 0.1 s) is measured over both runs. Prints a table (ms).
Target: a 1024-pixel region's p95 at most 100 ms.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pypdfium2 as pdfium

from bench.measure import PeakSampler
from bench.sheets import CORPUS
from bench.stacks import unthrottled
from planzoom import iiif
from planzoom.dzi import DziInfo, parse_dzi
from planzoom.v1 import jobs_pb2

SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
DPI = 300
OUT_PX = 1024  # the regions' output width
TARGET_P95_MS = 100.0


def first_sheet(work: Path) -> Path:
    """Page 1 of the crayfishinn set as a PDF of its own."""
    src = pdfium.PdfDocument(str(Path(CORPUS) / SET))
    out = pdfium.PdfDocument.new()
    out.import_pages(src, [0])
    path = work / "crayfishinn-sheet-1.pdf"
    out.save(str(path))
    return path


def region_paths(dzi: DziInfo, n: int, seed: int = 27) -> list[tuple[str, int]]:
    """``n`` random 1024-pixel region requests and the tiles each reads."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randrange(4)
        side = OUT_PX * 2**k
        x = rng.randrange(max(1, dzi.width - side))
        y = rng.randrange(max(1, dzi.height - side))
        w, h = min(side, dzi.width - x), min(side, dzi.height - y)
        request = iiif.parse(f"{x},{y},{w},{h}", f"{OUT_PX},", "0", "default.jpg")
        plan = iiif.resolve(request, dzi.width, dzi.height, iiif.Limits(10**4, 10**4, 25 * 10**6))
        tiles = len(iiif.pieces(dzi, iiif.source(dzi, plan, 50 * 10**6)))
        out.append((f"{x},{y},{w},{h}/{OUT_PX},/0/default.jpg", tiles))
    return out


def tile_paths(dzi: DziInfo, n: int, seed: int = 28) -> list[str]:
    """``n`` random tiles of the four largest levels."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        level = dzi.levels - 1 - rng.randrange(4)
        cols, rows = dzi.grid(level)
        out.append(f"{level}/{rng.randrange(cols)}_{rng.randrange(rows)}.jpg")
    return out


def timed(http: httpx.Client, urls: list[str], concurrency: int) -> list[float]:
    """Seconds each GET took to its last byte; every answer must be 200."""

    def one(url: str) -> float:
        t = time.perf_counter()
        r = http.get(url)
        if r.status_code != 200:
            raise SystemExit(f"GET {url}: {r.status_code} {r.text[:300]}")
        return time.perf_counter() - t

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, urls))


def quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    return 1000 * v[min(len(v) - 1, int(q * len(v)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regions", type=int, default=300)
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--layout", choices=["files", "archive"], default="files")
    ap.add_argument("--concurrency", type=int, default=1)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="planzoom-bench-iiif-"))
    sheet = first_sheet(work)
    with unthrottled(work) as (stack, client):
        layout = {"files": jobs_pb2.PYRAMID_LAYOUT_FILES,
                  "archive": jobs_pb2.PYRAMID_LAYOUT_ARCHIVE}[a.layout]
        plan = jobs_pb2.PlanRef(org="bench", project="iiif", plan="a1")
        t0 = time.monotonic()
        job_id = client.submit(str(sheet), plan, jobs_pb2.JobOptions(dpi=DPI,
                                                                    layout=layout)).job_id
        job = None
        for job in client.follow(job_id):  # noqa: B007 (the last record is the end)
            pass
        if job is None or job.state != jobs_pb2.JOB_STATE_COMPLETE:
            raise SystemExit(f"the sheet did not convert: {job}")
        converted = time.monotonic() - t0
        headers = {"Authorization": f"Bearer {stack.token('bench', 'viewer')}"}
        with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=120,
                          limits=httpx.Limits(max_connections=a.concurrency + 2)) as http:
            dzi = parse_dzi(http.get(f"/v1/jobs/{job_id}/pages/1.dzi").content)
            regions = region_paths(dzi, a.regions)
            tiles = tile_paths(dzi, a.tiles)
            base = f"/iiif/3/{job_id}-1/"
            timed(http, [base + "info.json"] + [base + p for p, _ in regions[:5]], 1)  # warm
            with PeakSampler({"gateway": stack.procs["gateway"].pid}) as sampler:
                region_s = timed(http, [base + p for p, _ in regions], a.concurrency)
                tile_s = timed(http, [f"/v1/jobs/{job_id}/pages/1_files/{t}" for t in tiles],
                               a.concurrency)

    reads = sorted(n for _, n in regions)
    print(f"\nIIIF regions vs DZI tiles: page 1 of {SET} at {DPI} DPI "
          f"({dzi.width} x {dzi.height} px, {dzi.levels} levels, layout {a.layout}, converted in "
          f"{converted:.0f} s); {a.concurrency} request(s) at a time, ms from send to last byte")
    print("| requests | n | p50 | p95 | p99 | max |\n|---|---|---|---|---|---|")
    for name, values in ((f"IIIF region, 1024 px wide ({reads[len(reads) // 2]} tiles read, "
                          f"median; up to {reads[-1]})", region_s),
                         ("DZI tile, 4 largest levels", tile_s)):
        print(f"| {name} | {len(values)} | {quantile(values, 0.5):.1f} | "
              f"{quantile(values, 0.95):.1f} | {quantile(values, 0.99):.1f} | "
              f"{1000 * max(values):.1f} |")
    p95 = quantile(region_s, 0.95)
    print(f"gateway peak RSS {sampler.peak['gateway'] / 1024:.0f} MiB, CPU "
          f"{sampler.cpu['gateway']:.1f} s over both runs; region p95 {p95:.1f} ms "
          f"({'within' if p95 <= TARGET_P95_MS else 'over'} the {TARGET_P95_MS:.0f} ms target)")


if __name__ == "__main__":
    main()
