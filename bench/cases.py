"""The benchmark's cases: the reference pipeline, planzoom through its
services, planzoom's compute alone, WatchJob latency, and helpers they share."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pypdfium2 as pdfium
from prometheus_client.parser import text_string_to_metric_families

from bench.measure import PeakSampler, run_cmd
from planzoom.engines import Raster
from planzoom.engines import pdf as pdf_engine
from planzoom.engines.pyramid import save_pyramid
from planzoom.engines.raster import raster_rows
from planzoom.heap import keep_freed_blocks
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from planzoom_cli.client import Client
from planzoom_devstack.stack import SERVICES, EmbeddedStack


def reference(pdf: Path, s3, bucket: str, work: Path
              ) -> tuple[float, float, int, float, dict]:
    """The pipeline planzoom replaces; returns (seconds, seconds before the
    first upload, objects, megapixels, peaks)."""
    peaks: dict[str, float] = {}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    run_cmd(["pdftoppm", "-r", "600", "-png", str(pdf), str(work / "p")], "pdftoppm", peaks)
    tiles, mpx = 0, 0.0
    for png in sorted(work.glob("p-*.png")):
        big = png.with_suffix(".v")
        run_cmd(["vips", "resize", str(png), str(big), "1.5"], "vips resize", peaks)
        out = work / png.stem
        run_cmd(["vips", "dzsave", str(big), str(out), "--tile-size", "256", "--overlap", "1",
                 "--suffix", ".jpg[Q=90]"], "vips dzsave", peaks)
        head = subprocess.run(["vipsheader", "-f", "width", str(big)], capture_output=True,
                              text=True).stdout
        hh = subprocess.run(["vipsheader", "-f", "height", str(big)], capture_output=True,
                            text=True).stdout
        mpx += int(head) * int(hh) / 1e6
        big.unlink()
        png.unlink()
    compute = time.monotonic() - t0
    prefix = f"reference/{int(time.time() * 1000)}/"
    for path in work.rglob("*"):
        if path.is_file():
            s3.put_object(Bucket=bucket, Key=prefix + str(path.relative_to(work)),
                          Body=path.read_bytes())
            tiles += 1
    total = time.monotonic() - t0
    return total, compute, tiles, mpx, peaks

@dataclass
class JobRun:
    """One job through the running services (:func:`planzoom_job`)."""

    seconds: float  # submit → COMPLETE
    tiles: int  # objects written: tiles and .dzi files
    megapixels: float  # full-resolution pixels over all pages
    peaks: dict  # peak RSS MiB of each service
    first_page: float  # submit → the first page DONE, seconds
    first_look: float | None  # submit → every page with its overview, seconds
    cpu: dict  # CPU seconds of each process, s3 and nats included
    s3_requests: Counter  # the store's requests while the job ran, by kind
    pyramid_requests: float  # of those, the ones that stored the pyramids
    job: jobs_pb2.Job  # its record once COMPLETE


def planzoom_job(client: Client, stack: EmbeddedStack, pdf: Path, dpi: float, tag: str,
                 layout: int = jobs_pb2.PYRAMID_LAYOUT_FILES) -> JobRun:
    """Submit ``pdf`` at ``dpi`` in ``layout`` and follow it to COMPLETE
    (WatchJob)."""
    plan = jobs_pb2.PlanRef(org="bench", project="bench", plan=tag)
    pids = {n: p.pid for n, p in stack.procs.items()}
    first_page = first_look = None
    requests = stack.s3_requests()
    pyramid = service_metric(stack, "tile", "planzoom_pyramid_s3_requests_total")
    with PeakSampler(pids) as sampler:
        t0 = time.monotonic()
        resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=dpi, layout=layout))
        for job in client.follow(resp.job_id):
            if first_page is None and job.completed_pages:
                first_page = time.monotonic() - t0
            if first_look is None and job.pages and all(
                    any(v.name == "overview" for v in p.variants) for p in job.pages):
                first_look = time.monotonic() - t0
        seconds = time.monotonic() - t0
    if job.state != jobs_pb2.JOB_STATE_COMPLETE:
        raise SystemExit(f"job {job.job_id} ended {job.state}: {job.error}")
    tiles = sum(p.tile_count for p in job.pages) + job.total_pages  # + the .dzi files
    mpx = sum(p.width_px * p.height_px for p in job.pages) / 1e6
    # A service's peak is its largest process's (tile-2 counts as tile).
    peaks = {n: max(v for p, v in sampler.peak.items() if p.split("-")[0] == n) / 1024
             for n in SERVICES}
    return JobRun(seconds, tiles, mpx, peaks, first_page, first_look, sampler.cpu,
                  stack.s3_requests() - requests,
                  service_metric(stack, "tile", "planzoom_pyramid_s3_requests_total") - pyramid,
                  job)

def watch_latency(client: Client, stack: EmbeddedStack, pdf: Path, dpi: float, tag: str,
                  watchers: int) -> list[float]:
    """Seconds from each page's completion (its .dzi written, the tile
    worker's finished_at) to each of ``watchers`` WatchJob streams receiving
    the record that shows it, for the pages that finished once every stream
    was connected (had its first record). The streams are read by one asyncio
    client (4 channels), so the measuring side adds little of its own."""
    plan = jobs_pb2.PlanRef(org="bench", project="bench", plan=tag)
    resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=dpi))
    address = stack.env()["PLANZOOM_PROGRESS_ADDR"]
    metadata = (("authorization", f"Bearer {stack.token('bench', 'viewer')}"),)
    seen_at: list[tuple[float, float]] = []  # (page finished_at, received), both epoch s
    connected: list[float] = []

    async def watch(stub) -> None:
        seen: set[int] = set()
        first = True
        request = progress_pb2.WatchJobRequest(job_id=resp.job_id)
        async for update in stub.WatchJob(request, timeout=600, metadata=metadata):
            now = time.time()
            if first:  # this stream's first update: it is connected
                connected.append(now)
                first = False
            for p in update.job.pages:  # a delta holds the pages that changed
                if p.state == jobs_pb2.PAGE_STATE_DONE and p.page not in seen:
                    seen.add(p.page)
                    seen_at.append((p.finished_at.ToNanoseconds() / 1e9, now))

    async def run() -> None:
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        stubs = [progress_pb2_grpc.ProgressServiceStub(c) for c in channels]
        try:
            await asyncio.gather(*(watch(stubs[i % len(stubs)]) for i in range(watchers)))
        finally:
            for c in channels:
                await c.close()

    asyncio.run(run())
    all_connected = max(connected)
    return [got - done for done, got in seen_at if done > all_connected]

def render_all(pdf: Path, pages: list[int], dpi: float, work: Path,
               on_ready=None, text: bool = True) -> list:
    """Render ``pages`` with one PDFium worker process (as the render service
    does) into ``work``; yields (page, Raster, raster path) as each
    page is ready, so the caller can tile page N while page N+1 renders.
    ``on_ready()`` is called once the worker is up (its modules imported),
    before the first page is sent: the service's workers are started ahead
    of any job, so a timing starts there. With ``text`` each page's words
    and sheet candidates are read beside its raster, as the service does."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as render:
        render.submit(_warm).result()
        if on_ready is not None:
            on_ready()
        futures = [(p, work / f"page-{p}.raw.zst",
                    render.submit(_render, str(pdf), p, dpi, str(work / f"page-{p}.raw.zst"),
                                  text))
                   for p in pages]
        for page, path, future in futures:
            yield page, future.result(), path


def _render(pdf: str, page: int, dpi: float, out: str, text: bool = True) -> Raster:
    """Page ``page`` at ``dpi`` (no pixel cap) to a raster at ``out``, in
    64 MiB bands, as a render worker does it (with ``text``, its words and
    sheet candidates beside it)."""
    options = jobs_pb2.JobOptions(dpi=dpi, max_page_pixels=10**10)
    return pdf_engine.rasterize(pdf, pdf_engine.geometry(pdf, page, options), out, 64 << 20,
                                text)


def _warm() -> None:
    """Import in a worker what rendering a page imports, and set its heap
    as the service's workers do."""
    keep_freed_blocks()
    import cv2  # noqa: F401
    import pypdfium2  # noqa: F401
    import zstandard  # noqa: F401


def tile_to_disk(r, raster: Path, out: Path, name: str, encode_threads: int | None = None
                 ) -> object:
    with open(raster, "rb") as f:
        return save_pyramid(raster_rows(f, r.width_px, r.height_px, r.bands), r.width_px,
                            r.height_px, r.bands, str(out), name, 256, 1, 90,
                            encode_threads=encode_threads)

def compute_only(pdf: Path, pages: list[int], dpi: float, work: Path,
                 text: bool = True) -> tuple[float, int]:
    """planzoom's compute with no upload: one render worker process (timed
    from when it is up, as the service's are; with ``text`` reading each
    page's words and sheet candidates too, as the service does) and one
    tile worker (this process, its default encoder threads), pipelined,
    tiles written to local files. Returns (seconds, tiles)."""
    keep_freed_blocks()  # as the tile service does
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiles = 0
    t0 = [0.0]
    for page, r, raster in render_all(pdf, pages, dpi, work,
                                      on_ready=lambda: t0.__setitem__(0, time.monotonic()),
                                      text=text):
        tiles += tile_to_disk(r, raster, work, f"page-{page}").tile_count() + 1
        raster.unlink()
    seconds = time.monotonic() - t0[0]
    shutil.rmtree(work, ignore_errors=True)
    return seconds, tiles

def service_metric(stack: EmbeddedStack, service: str, sample_name: str,
                   **labels: str) -> float:
    """The sum of one metric's samples (``sample_name`` with ``labels``)
    over every running process of ``service`` (tile, tile-2, ...)."""
    total = 0.0
    for proc, port in stack.metrics_ports.items():
        if not proc.startswith(service) or proc not in stack.procs:
            continue
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if sample.name == sample_name and all(
                        sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
    return total


def stage_seconds(stack: EmbeddedStack, stage: str) -> float:
    """Seconds all ``stage`` processes spent on pages so far (their
    planzoom_stage_duration_seconds histograms)."""
    return service_metric(stack, stage, "planzoom_stage_duration_seconds_sum", stage=stage)


#: AWS S3 Standard list prices, US East, USD per 1,000 requests.
PRICE_PER_1000 = {"PUT": 0.005, "POST": 0.005, "COPY": 0.005, "LIST": 0.005,
                  "GET": 0.0004, "HEAD": 0.0004}


def request_cost(requests: Counter) -> float:
    """USD at :data:`PRICE_PER_1000` for ``requests`` (by kind; DELETE is free)."""
    return sum(n * PRICE_PER_1000.get(kind, 0.0) for kind, n in requests.items()) / 1000

def sheet_pdf(src: Path, page: int, width_in: float, height_in: float, out: Path) -> Path:
    """One page of ``src`` scaled to fit a ``width_in`` x ``height_in`` inch
    sheet (a real drawing on a bigger or smaller sheet)."""
    doc, dst = pdfium.PdfDocument(str(src)), pdfium.PdfDocument.new()
    w, h = (v * 72 for v in (width_in, height_in))
    sheet = dst.new_page(w, h)
    obj = doc.page_as_xobject(page - 1, dst).as_pageobject()
    left, bottom, right, top = doc[page - 1].get_mediabox()
    scale = min(w / (right - left), h / (top - bottom))
    obj.transform(pdfium.PdfMatrix().translate(-left, -bottom).scale(scale, scale))
    sheet.insert_obj(obj)
    sheet.gen_content()
    dst.save(str(out))
    return out
