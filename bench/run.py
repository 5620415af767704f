"""planzoom benchmark: the reference pipeline and planzoom side by side, in
one run, on corpus PDFs. Prints a table of medians over --runs runs.

Cases
  reference   pdftoppm -r 600 -png → vips resize 1.5 → vips dzsave (tile 256,
              overlap 1, .jpg[Q=90]) → sequential put_object of every file
  planzoom    submit → COMPLETE through the running services, at the
              reference's output size (900 DPI) and at the default 300 DPI
  tile stage  planzoom's pyramid build (pyvips, in process) against
              `vips dzsave` of the same raster to local disk

Peak RSS is sampled every 0.1 s over each stage's process tree (a render
service includes its PDFium worker processes).

Usage: python bench/run.py [--pdf PATH] [--runs N] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planzoom.client import Client  # noqa: E402
from planzoom.faultproxy import FaultProxy  # noqa: E402
from planzoom.stack import S3_ACCESS_KEY, S3_SECRET_KEY, EmbeddedStack, Ports  # noqa: E402
from planzoom.v1 import jobs_pb2  # noqa: E402
from services.render.rasterize import close_documents, render_page  # noqa: E402
from services.tile.pyramid import build_pyramid  # noqa: E402

DEFAULT_PDF = ROOT.parent / "shared/corpus/arch-renovation-plans-7p-a4-affinity-latirasse.pdf"


# -- measurement ------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        todo += _children(p)
    return total


class PeakSampler:
    """Max tree RSS of named pids while running (a context manager)."""

    def __init__(self, pids: dict[str, int]):
        self.pids, self.peak = pids, dict.fromkeys(pids, 0)
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


@dataclass
class Result:
    case: str
    pages: int = 0
    megapixels: float = 0.0
    seconds: list[float] = field(default_factory=list)
    tiles: int = 0
    peak_mib: dict[str, float] = field(default_factory=dict)
    notes: str = ""

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

def reference(pdf: Path, s3, bucket: str, work: Path) -> tuple[float, int, float, dict]:
    """The pipeline planzoom replaces; returns (seconds, tiles, megapixels, peaks)."""
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
    peaks["compute s"] = compute
    return total, tiles, mpx, peaks


def planzoom_job(client: Client, stack: EmbeddedStack, pdf: Path, dpi: float, tag: str
                 ) -> tuple[float, int, float, dict, float]:
    """Submit → COMPLETE; returns (seconds, tiles, megapixels, peaks, first page s)."""
    plan = jobs_pb2.PlanRef(org="bench", project="bench", plan=tag)
    pids = {n: stack.procs[n].pid for n in ("ingest", "render", "tile", "progress")}
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
    return seconds, tiles, mpx, {n: v / 1024 for n, v in sampler.peak.items()}, first_page


def watch_latency(client: Client, stack: EmbeddedStack, pdf: Path, dpi: float, tag: str,
                  watchers: int) -> list[float]:
    """Seconds from each page's completion (its .dzi written, the tile
    worker's finished_at) to each of ``watchers`` WatchJob streams receiving
    the record that shows it."""
    plan = jobs_pb2.PlanRef(org="bench", project="bench", plan=tag)
    resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=dpi))
    delays: list[float] = []
    lock = threading.Lock()

    def watch() -> None:
        seen: set[int] = set()
        for job in client.watch(resp.job_id, timeout=600):
            now = time.time()
            for p in job.pages:
                if p.state == jobs_pb2.PAGE_STATE_DONE and p.page not in seen:
                    seen.add(p.page)
                    with lock:
                        delays.append(now - p.finished_at.ToNanoseconds() / 1e9)

    threads = [threading.Thread(target=watch) for _ in range(watchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return delays


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


def tile_stage(pdf: Path, dpi: float, work: Path) -> tuple[float, float, float, int, tuple]:
    """(planzoom pyramid s, vips dzsave s, megapixels, bands, blank tiles of the
    full-resolution level) for page 1 at ``dpi``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    zst = work / "page.raw.zst"
    r = render_page(str(pdf), 1, dpi, 10**10, str(zst), 64 << 20)
    close_documents()
    raw = work / "page.raw"
    with open(zst, "rb") as src, open(raw, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)
    (work / "pz").mkdir()
    t0 = time.monotonic()
    info = build_pyramid(str(raw), r.width_px, r.height_px, r.bands, str(work / "pz"),
                         "page-1", 256, 1, 90)
    ours = time.monotonic() - t0
    white = blank_tiles(work / "pz" / "page-1_files" / str(info.levels - 1))
    vfile = work / "page.v"
    subprocess.run(["vips", "rawload", str(raw), str(vfile), str(r.width_px),
                    str(r.height_px), str(r.bands)], check=True)
    t0 = time.monotonic()
    subprocess.run(["vips", "dzsave", str(vfile), str(work / "ref"), "--tile-size", "256",
                    "--overlap", "1", "--suffix", ".jpg[Q=90]"], check=True)
    theirs = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    return ours, theirs, r.width_px * r.height_px / 1e6, r.bands, white


# -- main ---------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description="planzoom benchmark")
    ap.add_argument("--pdf", type=Path, default=DEFAULT_PDF)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="add this delay to every S3 request (a loopback proxy)")
    ap.add_argument("--watchers", type=int, default=200,
                    help="WatchJob streams open while progress latency is measured")
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
    client = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"])
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
    results = {k: Result(k) for k in ("reference", "planzoom-900", "planzoom-300",
                                      "planzoom-900-2tile")}
    latencies: list[float] = []
    stage = {"ours": [], "vips": [], "mpx": 0.0, "bands": 0}
    first_pages = []
    try:
        for run in range(a.runs):
            print(f"run {run + 1}/{a.runs}", flush=True)
            secs, tiles, mpx, peaks = reference(a.pdf, s3, "planzoom", data / "ref")
            r = results["reference"]
            r.seconds.append(secs)
            r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
            for dpi in (900, 300):
                secs, tiles, mpx, peaks, first = planzoom_job(
                    client, stack, a.pdf, dpi, f"r{run}-{dpi}")
                r = results[f"planzoom-{dpi}"]
                r.seconds.append(secs)
                r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
                if dpi == 900:
                    first_pages.append(first)
            # Two tile workers on the same job.
            second = stack.start_service("tile", replica=2)
            secs, tiles, mpx, peaks, _ = planzoom_job(client, stack, a.pdf, 900, f"r{run}-2t")
            stack.stop_service(second)
            r = results["planzoom-900-2tile"]
            r.seconds.append(secs)
            r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
            latencies += watch_latency(client, stack, a.pdf, 300, f"r{run}-watch", a.watchers)
            ours, theirs, mpx, bands, white = tile_stage(a.pdf, 900, data / "tile")
            stage["ours"].append(ours)
            stage["vips"].append(theirs)
            stage["mpx"], stage["bands"], stage["white"] = mpx, bands, white
    finally:
        client.close()
        stack.stop()
        if proxy:
            proxy.stop()
        shutil.rmtree(data, ignore_errors=True)

    ref = results["reference"]
    print()
    print(f"PDF: {a.pdf.name}; S3 latency added: {a.latency_ms:g} ms; settings: {a.env}; "
          f"median of {a.runs} run(s); machine: {os.cpu_count()} cores")
    print()
    head = f"{'case':<20}{'MP':>9}{'wall s':>9}{'MP/s':>8}{'tiles':>9}{'×ref':>7}  peak RSS MiB"
    print(head)
    print("-" * len(head) + "-" * 30)
    for name, r in results.items():
        ratio = ref.median / r.median if r is not ref else 1.0
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.peak_mib.items() if not k.endswith(" s"))
        print(f"{name:<20}{r.megapixels:>9.1f}{r.median:>9.1f}{r.megapixels / r.median:>8.1f}"
              f"{r.tiles:>9}{ratio:>7.2f}  {rss}")
    print()
    print(f"reference compute (before upload): {ref.peak_mib.get('compute s', 0):.1f} s")
    print(f"time to first viewable page at 900 DPI: {statistics.median(first_pages):.1f} s")
    one, two = results["planzoom-900"].median, results["planzoom-900-2tile"].median
    print(f"two tile workers against one at 900 DPI: {one / two:.2f}x")
    q = statistics.quantiles(latencies, n=100)
    print(f"page done (.dzi written) → watcher has it, {a.watchers} watchers, "
          f"{len(latencies)} deliveries: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
    ours, theirs = statistics.median(stage["ours"]), statistics.median(stage["vips"])
    print(f"tile stage, page 1 at 900 DPI ({stage['mpx']:.0f} MP, {stage['bands']} band(s)): "
          f"planzoom pyramid "
          f"{ours:.1f} s, vips dzsave {theirs:.1f} s, ratio {theirs / ours:.2f}")
    w, n, wb, ab = stage["white"]
    print(f"pure-white tiles at full resolution, page 1: {w} of {n} ({100 * w / n:.0f} %), "
          f"{wb / 1024:.0f} of {ab / 1024:.0f} KiB ({100 * wb / ab:.0f} % of the bytes)")


if __name__ == "__main__":
    main()
