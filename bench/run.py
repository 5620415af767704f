"""planzoom benchmark: the reference pipeline and planzoom side by side, in
one run, on corpus PDFs. Prints a table of medians over --runs runs.

Cases
  reference          pdftoppm -r 600 -png → vips resize 1.5 → vips dzsave
                     (tile 256, overlap 1, .jpg[Q=90]) → sequential put_object
                     of every file; "compute" is everything before the upload
  planzoom-900/300   submit → COMPLETE through the running services, at the
                     reference's output size (900 DPI) and at the default DPI
  planzoom compute   render (one PDFium worker process) + pyramid + encode,
                     tiles to local disk, no upload
  2 tile             planzoom-900 with a second tile worker
  tile stage         on the first --stage-pages pages: planzoom's pyramid and
                     `vips dzsave` to local disk; the endpoint's ceiling (bare
                     loops PUTting the same files: boto3's put_object from one
                     process, the tile worker's put_small from as many
                     processes as it uploads from; the faster one counts);
                     the tile service's code (pyramid with PUTs as tiles come)
  progress           page done → WatchJob delivery with --watchers streams
  memory             one colour drawing on an 8.5x11 in and a 36x48 in sheet
                     at 600 DPI, peak RSS of each service

Peak RSS is sampled every 0.1 s over each stage's process tree (a render
service includes its PDFium worker processes).

Usage: python bench/run.py [--pdf PATH] [--runs N] [--latency-ms MS] [--no-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import grpc
import pypdfium2 as pdfium
import zstandard
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planzoom.client import Client  # noqa: E402
from planzoom.config import Settings  # noqa: E402
from planzoom.faultproxy import FaultProxy  # noqa: E402
from planzoom.stack import S3_ACCESS_KEY, S3_SECRET_KEY, EmbeddedStack, Ports  # noqa: E402
from planzoom.storage import ObjectStore  # noqa: E402
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc  # noqa: E402
from services.render.rasterize import render_page  # noqa: E402
from services.tile.pyramid import cut_pyramid, raster_rows, save_pyramid  # noqa: E402
from services.tile.uploads import UploadPool, threads_per_process  # noqa: E402

DEFAULT_PDF = ROOT.parent / "shared/corpus/arch-renovation-plans-7p-a4-affinity-latirasse.pdf"


# -- measurement ------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def _proc_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            return f.read()
    except OSError:  # the process has gone
        return ""


def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, KiB."""
    return sum(int(line.split()[1]) for p in _tree(pid)
               for line in _proc_text(p, "status").splitlines() if line.startswith("VmRSS:"))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    ticks = 0
    for p in _tree(pid):
        stat = _proc_text(p, "stat")
        if stat:
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class PeakSampler:
    """Max tree RSS (KiB) of named pids while running, and the CPU seconds
    each tree used meanwhile (a context manager)."""

    def __init__(self, pids: dict[str, int]):
        self.pids, self.peak = pids, dict.fromkeys(pids, 0)
        self.cpu = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], tree_rss_kib(pid))

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = {name: tree_cpu_seconds(pid) - self.cpu[name]
                    for name, pid in self.pids.items()}


@dataclass
class Result:
    case: str
    pages: int = 0
    megapixels: float = 0.0
    seconds: list[float] = field(default_factory=list)
    tiles: int = 0
    peak_mib: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run_cmd(argv: list[str], sampler_name: str, peaks: dict[str, float]) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    peaks[sampler_name] = max(peaks.get(sampler_name, 0), peak / 1024)
    return time.monotonic() - t0


# -- cases --------------------------------------------------------------------

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


SERVICES = ("ingest", "render", "tile", "progress")


def planzoom_job(client: Client, stack: EmbeddedStack, pdf: Path, dpi: float, tag: str
                 ) -> tuple[float, int, float, dict, float, dict]:
    """Submit → COMPLETE; returns (seconds, tiles, megapixels, peak RSS MiB of
    each service, first page s, CPU seconds of each process incl. s3 and nats)."""
    plan = jobs_pb2.PlanRef(org="bench", project="bench", plan=tag)
    pids = {n: p.pid for n, p in stack.procs.items()}
    first_page = None
    with PeakSampler(pids) as sampler:
        t0 = time.monotonic()
        resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=dpi))
        for job in client.follow(resp.job_id):
            if first_page is None and job.completed_pages:
                first_page = time.monotonic() - t0
        seconds = time.monotonic() - t0
    if job.state != jobs_pb2.JOB_STATE_COMPLETE:
        raise SystemExit(f"job {job.job_id} ended {job.state}: {job.error}")
    tiles = sum(p.tile_count for p in job.pages) + job.total_pages  # + the .dzi files
    mpx = sum(p.width_px * p.height_px for p in job.pages) / 1e6
    # A service's peak is its largest process's (tile-2 counts as tile).
    peaks = {n: max(v for p, v in sampler.peak.items() if p.split("-")[0] == n) / 1024
             for n in SERVICES}
    return seconds, tiles, mpx, peaks, first_page, sampler.cpu


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
    seen_at: list[tuple[float, float]] = []  # (page finished_at, received), both epoch s
    connected: list[float] = []

    async def watch(stub) -> None:
        seen: set[int] = set()
        first = True
        request = progress_pb2.WatchJobRequest(job_id=resp.job_id)
        async for job in stub.WatchJob(request, timeout=600):
            now = time.time()
            if first:  # this stream's first record: it is connected
                connected.append(now)
                first = False
            for p in job.pages:
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


def blank_tiles(level_dir: Path) -> tuple[int, int, int, int]:
    """(pure-white tiles, tiles, their bytes, all bytes) of one pyramid level."""
    import pyvips

    white = total = white_bytes = all_bytes = 0
    for tile in level_dir.iterdir():
        size = tile.stat().st_size
        total, all_bytes = total + 1, all_bytes + size
        if pyvips.Image.new_from_file(str(tile), access="sequential").min() == 255:
            white, white_bytes = white + 1, white_bytes + size
    return white, total, white_bytes, all_bytes


def render_all(pdf: Path, pages: list[int], dpi: float, work: Path) -> list:
    """Render ``pages`` with one PDFium worker process (as the render service
    does) into ``work``; yields (page, RenderResult, raster path) as each
    page is ready, so the caller can tile page N while page N+1 renders."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as render:
        futures = [(p, work / f"page-{p}.raw.zst",
                    render.submit(render_page, str(pdf), p, dpi, 10**10,
                                  str(work / f"page-{p}.raw.zst"), 64 << 20))
                   for p in pages]
        for page, path, future in futures:
            yield page, future.result(), path


def tile_to_disk(r, raster: Path, out: Path, name: str, encode_threads: int | None = None
                 ) -> object:
    with open(raster, "rb") as f:
        return save_pyramid(raster_rows(f, r.width_px, r.height_px, r.bands), r.width_px,
                            r.height_px, r.bands, str(out), name, 256, 1, 90,
                            encode_threads=encode_threads)


def _tile_worker(rasters: list, out: Path) -> None:
    """One tile worker process with one encoder thread (a one-core replica)."""
    for page, r, raster in rasters:
        tile_to_disk(r, raster, out, f"page-{page}", encode_threads=1)


def tile_workers(rasters: list, out: Path, workers: int) -> float:
    """Seconds for ``workers`` one-core tile processes to cut ``rasters``
    (pages dealt round-robin) to local disk."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(time.sleep, [1.0] * workers))  # processes up and imported
        t0 = time.monotonic()
        for f in [pool.submit(_tile_worker, rasters[i::workers], out / f"w{workers}")
                  for i in range(workers)]:
            f.result()
        seconds = time.monotonic() - t0
    shutil.rmtree(out / f"w{workers}", ignore_errors=True)
    return seconds


def compute_only(pdf: Path, pages: list[int], dpi: float, work: Path) -> tuple[float, int]:
    """planzoom's compute with no upload: one render worker process and one
    tile worker (this process, its default encoder threads), pipelined,
    tiles written to local disk. Returns (seconds, tiles)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiles = 0
    t0 = time.monotonic()
    for page, r, raster in render_all(pdf, pages, dpi, work):
        tiles += tile_to_disk(r, raster, work, f"page-{page}").tile_count() + 1
        raster.unlink()
    seconds = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    return seconds, tiles


@dataclass
class Stage:
    """The tile stage on the same rasters, four ways (seconds)."""
    pyramid: float  # planzoom's pyramid to local disk, no upload
    dzsave: float  # `vips dzsave` of the same rasters to local disk
    upload: float  # bare boto3 put_object: the pyramid's files, N threads, one process
    upload_procs: float  # bare put_small over the tile worker's upload processes
    overlapped: float  # what the tile service runs: pyramid + PUTs as tiles come
    one_worker: float  # one one-core tile process, to local disk
    two_workers: float  # two one-core tile processes, to local disk
    objects: int
    megapixels: float
    bands: list[int]
    white: tuple[int, int, int, int]


def _bare_puts(settings: Settings, prefix: str, bodies: list[tuple[str, bytes]],
               threads: int, small: bool) -> None:
    """PUT ``bodies`` (key, bytes) with ``threads`` threads and one client:
    boto3's ``put_object``, or ``ObjectStore.put_small`` if ``small``."""
    store = ObjectStore(settings, credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    put = store.put_small if small else store.put_bytes
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kb: put(prefix + kb[0], kb[1], "image/jpeg"), bodies))


def bare_upload(settings: Settings, bodies: list[tuple[str, bytes]], processes: int,
                small: bool) -> float:
    """Seconds for ``processes`` processes sharing the tile worker's
    PLANZOOM_UPLOAD_CONCURRENCY threads to PUT ``bodies`` (see _bare_puts)."""
    threads = threads_per_process(settings.upload_concurrency, processes)
    prefix = f"ceiling/{processes}/{small}/{int(time.time() * 1000)}/"
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        list(pool.map(time.sleep, [1.0] * processes))  # processes up and imported
        t0 = time.monotonic()
        list(pool.map(_bare_puts, [settings] * processes, [prefix] * processes,
                      [bodies[i::processes] for i in range(processes)], [threads] * processes,
                      [small] * processes))
        return time.monotonic() - t0


def tile_stage(pdf: Path, pages: list[int], dpi: float, work: Path, settings: Settings,
               uploads: UploadPool) -> Stage:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rasters = list(render_all(pdf, pages, dpi, work))
    mpx = sum(r.width_px * r.height_px for _, r, _ in rasters) / 1e6
    # (1) pyramid only
    t0 = time.monotonic()
    levels = [tile_to_disk(r, raster, work / "pz", f"page-{page}").levels
              for page, r, raster in rasters]
    pyramid = time.monotonic() - t0
    white = blank_tiles(work / "pz" / f"page-{rasters[0][0]}_files" / str(levels[0] - 1))
    # (2) vips dzsave of the same rasters (decompressed beforehand, untimed)
    dzsave = 0.0
    for page, r, raster in rasters:
        vfile = work / f"page-{page}.v"
        raw = work / f"page-{page}.raw"
        with open(raster, "rb") as src, open(raw, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        subprocess.run(["vips", "rawload", str(raw), str(vfile), str(r.width_px),
                        str(r.height_px), str(r.bands)], check=True)
        raw.unlink()
        t0 = time.monotonic()
        subprocess.run(["vips", "dzsave", str(vfile), str(work / "ref" / f"page-{page}"),
                        "--tile-size", "256", "--overlap", "1", "--suffix", ".jpg[Q=90]"],
                       check=True)
        dzsave += time.monotonic() - t0
        vfile.unlink()
    # (3) the storage endpoint's ceiling for these objects: bare boto3 loops
    # from one process and from the tile worker's number of upload processes
    files = [p for p in (work / "pz").rglob("*") if p.is_file()]
    bodies = [(str(p.relative_to(work)), p.read_bytes()) for p in files]
    upload = bare_upload(settings, bodies, 1, small=False)
    upload_procs = bare_upload(settings, bodies, settings.upload_processes, small=True)
    # (4) what the tile service does: pyramid cut while its upload processes
    # PUT the tiles
    prefix = f"overlapped/{int(time.time() * 1000)}/"
    t0 = time.monotonic()
    for page, r, raster in rasters:
        with open(raster, "rb") as f:
            def put(key: str, data: bytes, page=page) -> Future:
                return uploads.put(f"{prefix}page-{page}_files/{key}", data, "image/jpeg")
            cut_pyramid(raster_rows(f, r.width_px, r.height_px, r.bands), r.width_px,
                        r.height_px, r.bands, 256, 1, 90, put,
                        max_in_flight=4 * settings.upload_concurrency)
    overlapped = time.monotonic() - t0
    # (5) tile workers as separate one-core processes: one against two,
    # alternated three times (the machine is noisy), medians
    times = {1: [], 2: []}
    for _ in range(3):
        for n in (1, 2):
            times[n].append(tile_workers(rasters, work, n))
    one, two = statistics.median(times[1]), statistics.median(times[2])
    shutil.rmtree(work, ignore_errors=True)
    return Stage(pyramid, dzsave, upload, upload_procs, overlapped, one, two, len(bodies), mpx,
                 sorted({r.bands for _, r, _ in rasters}), white)


def stage_seconds(stack: EmbeddedStack, stage: str) -> float:
    """Seconds all ``stage`` processes spent on pages so far (their
    planzoom_stage_duration_seconds histograms)."""
    total = 0.0
    for proc, port in stack.metrics_ports.items():
        if not proc.startswith(stage) or proc not in stack.procs:
            continue
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if sample.name == "planzoom_stage_duration_seconds_sum" and \
                        sample.labels.get("stage") == stage:
                    total += sample.value
    return total


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


# -- main ---------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description="planzoom benchmark")
    ap.add_argument("--pdf", type=Path, default=DEFAULT_PDF)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="add this delay to every S3 request (a loopback proxy)")
    ap.add_argument("--watchers", type=int, default=200,
                    help="WatchJob streams open while progress latency is measured")
    ap.add_argument("--stage-pages", type=int, default=4,
                    help="pages of the PDF used for the tile-stage comparison")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the small-vs-huge sheet memory case")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra PLANZOOM_* setting for the services (repeatable)")
    a = ap.parse_args()
    for tool in ("pdftoppm", "vips", "vipsheader"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install poppler-utils libvips-tools")

    data = Path(tempfile.mkdtemp(prefix="planzoom-bench-"))
    ports = Ports.free()
    # Both pipelines reach S3 through the same endpoint: the server itself, or
    # a loopback proxy that adds latency to every request.
    proxy = None
    endpoint = f"http://127.0.0.1:{ports.s3}"
    if a.latency_ms:
        proxy = FaultProxy(endpoint, delay=a.latency_ms / 1000).start()
        endpoint = proxy.url
    extra = {"PLANZOOM_S3_ENDPOINT_URL": endpoint, "PLANZOOM_MAX_PAGE_PIXELS": str(2 * 10**9)}
    extra.update(kv.split("=", 1) for kv in a.env)
    stack = EmbeddedStack(data_dir=data / "stack", ports=ports, extra_env=extra)
    stack.start()
    env = stack.env()
    settings = Settings(**{k.removeprefix("PLANZOOM_").lower(): v for k, v in env.items()
                           if k.startswith("PLANZOOM_")})
    threads = settings.upload_concurrency
    client = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"])
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                      config=boto3.session.Config(max_pool_connections=threads))
    store = ObjectStore(settings, credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    uploads = UploadPool.from_settings(settings, credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    total_pages = len(pdfium.PdfDocument(str(a.pdf)))
    pages = list(range(1, total_pages + 1))
    results = {k: Result(k, pages=total_pages) for k in (
        "reference", "reference compute", "planzoom-900", "planzoom-900 compute",
        "planzoom-900 2 tile", "planzoom-300")}
    latencies: list[float] = []
    stages: list[Stage] = []
    first_pages, tile_rates = [], []
    memory: dict[str, tuple[float, dict]] = {}
    try:
        for run in range(a.runs):
            print(f"run {run + 1}/{a.runs}", flush=True)
            secs, compute, tiles, mpx, peaks = reference(a.pdf, s3, "planzoom", data / "ref")
            for name, value in (("reference", secs), ("reference compute", compute)):
                r = results[name]
                r.seconds.append(value)
                r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
            for dpi in (900, 300):
                busy = stage_seconds(stack, "tile")
                secs, tiles, mpx, peaks, first, cpu = planzoom_job(
                    client, stack, a.pdf, dpi, f"r{run}-{dpi}")
                r = results[f"planzoom-{dpi}"]
                r.seconds.append(secs)
                r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
                if dpi == 900:
                    first_pages.append(first)
                    cpu_900 = cpu
                    tile_rates.append(tiles / (stage_seconds(stack, "tile") - busy))
            secs, tiles = compute_only(a.pdf, pages, 900, data / "compute")
            r = results["planzoom-900 compute"]
            r.seconds.append(secs)
            r.tiles, r.megapixels = tiles, results["planzoom-900"].megapixels
            # Two tile workers on the same job.
            second = stack.start_service("tile", replica=2)
            secs, tiles, mpx, peaks, _, _ = planzoom_job(client, stack, a.pdf, 900,
                                                         f"r{run}-2t")
            stack.stop_service(second)
            r = results["planzoom-900 2 tile"]
            r.seconds.append(secs)
            r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
            latencies += watch_latency(client, stack, a.pdf, 300, f"r{run}-watch", a.watchers)
            stages.append(tile_stage(a.pdf, pages[: a.stage_pages], 900, data / "tile",
                                     settings, uploads))
            for prefix in ("reference/", "ceiling/", "overlapped/", "tiles/"):
                store.delete_prefix(prefix)  # each run starts from the same bucket
        if a.memory:
            # One real colour drawing on a letter sheet and on a 36 x 48 in
            # sheet, both at 600 DPI: 34 MP against 622 MP.
            src = ROOT.parent / "shared/corpus/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
            for label, (w, h) in (("8.5x11 in", (8.5, 11)), ("36x48 in", (36, 48))):
                pdf = sheet_pdf(src, 2, w, h, data / f"sheet-{w}x{h}.pdf")
                secs, tiles, mpx, peaks, _, _ = planzoom_job(
                    client, stack, pdf, 600, f"mem-{w:g}x{h:g}".replace(".", "-"))
                memory[label] = (mpx, peaks)
    finally:
        uploads.close()
        client.close()
        stack.stop()
        if proxy:
            proxy.stop()
        shutil.rmtree(data, ignore_errors=True)

    med = statistics.median
    ref = results["reference"]
    print()
    print(f"PDF: {a.pdf.name}; S3 latency added: {a.latency_ms:g} ms; settings: {a.env}; "
          f"median of {a.runs} run(s); machine: {os.cpu_count()} cores")
    print()
    head = (f"{'case':<22}{'pages':>6}{'MP':>8}{'wall s':>8}{'pages/min':>10}{'MP/s':>7}"
            f"{'objects':>9}{'x ref':>7}  peak RSS MiB")
    print(head)
    print("-" * (len(head) + 30))
    for name, r in results.items():
        base = results["reference compute"] if name.endswith("compute") else ref
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.peak_mib.items()) if "compute" not in \
            name or name.startswith("reference") else ""
        print(f"{name:<22}{r.pages:>6}{r.megapixels:>8.1f}{r.median:>8.1f}"
              f"{60 * r.pages / r.median:>10.1f}{r.megapixels / r.median:>7.1f}"
              f"{r.tiles:>9}{base.median / r.median:>7.2f}  {rss}")
    print("(x ref: the reference's median over this row's; compute rows against the "
          "reference's compute, i.e. everything before its first upload)")
    print()
    for name in ("planzoom-900", "planzoom-900 compute"):
        base = results["reference compute" if "compute" in name else "reference"].seconds
        print(f"{name} against the reference, run by run: " + ", ".join(
            f"{b / x:.2f}x" for b, x in zip(base, results[name].seconds, strict=True)))
    one, two = results["planzoom-900"].median, results["planzoom-900 2 tile"].median
    print(f"two tile workers against one, 900 DPI end to end: {one / two:.2f}x")
    print("CPU seconds per process during the last planzoom-900 run: " +
          ", ".join(f"{n} {v:.1f}" for n, v in cpu_900.items()))
    print(f"time to first viewable page at 900 DPI: {med(first_pages):.1f} s "
          f"(of {one:.1f} s for all {total_pages})")
    q = statistics.quantiles(latencies, n=100)
    print(f"page done (.dzi written) -> watcher has it, {a.watchers} watchers connected, "
          f"{len(latencies)} deliveries: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
    st = stages[-1]
    pyr, dz = med(x.pyramid for x in stages), med(x.dzsave for x in stages)
    up, ov = med(x.upload for x in stages), med(x.overlapped for x in stages)
    upp = med(x.upload_procs for x in stages)
    procs = settings.upload_processes
    best = min(up, upp)
    ceiling = st.objects / best
    print()
    print(f"tile stage, pages 1-{min(a.stage_pages, total_pages)} at 900 DPI "
          f"({st.megapixels:.0f} MP, bands {st.bands}, {st.objects} objects):")
    print(f"  pyramid to local disk: planzoom {pyr:.2f} s, vips dzsave {dz:.2f} s "
          f"-> planzoom is {dz / pyr:.2f}x dzsave's speed")
    print(f"  storage ceiling, bare loops of {threads} threads: boto3 put_object in 1 "
          f"process {up:.2f} s = {st.objects / up:.0f} PUT/s; put_small in {procs} "
          f"processes {upp:.2f} s = {st.objects / upp:.0f} PUT/s")
    print(f"  pyramid + upload overlapped (the tile service's code, {procs} upload "
          f"processes): {ov:.2f} s = {st.objects / ov:.0f} PUT/s = {100 * best / ov:.0f} % "
          f"of the ceiling; max(pyramid, upload) {max(pyr, best):.2f} s, "
          f"sum {pyr + best:.2f} s")
    print(f"  tile service during planzoom-900: {med(tile_rates):.0f} objects per busy "
          f"second = {100 * med(tile_rates) / ceiling:.0f} % of the ceiling")
    print(f"  two one-core tile worker processes against one (pyramid to disk, no "
          f"upload): {med(x.one_worker for x in stages) / med(x.two_workers for x in stages):.2f}x")
    w, n, wb, ab = st.white
    print(f"  pure-white tiles at full resolution, page 1: {w} of {n} ({100 * w / n:.0f} %), "
          f"{wb / 1024:.0f} of {ab / 1024:.0f} KiB ({100 * wb / ab:.0f} % of the bytes)")
    if memory:
        print()
        print("peak RSS by sheet size, 600 DPI, one colour page (MiB):")
        for label, (mpx, peaks) in memory.items():
            print(f"  {label:<10} {mpx:>6.0f} MP  " +
                  ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


if __name__ == "__main__":
    main()
