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
  progress at scale  a --scale-pages job (2000) watched by --watchers streams,
                     300 pages reported at 10 a second (bench/progress.py):
                     delivery latency, bytes per stream, progress CPU
  memory             one colour drawing on an 8.5x11 in and a 36x48 in sheet
                     at 600 DPI, in both layouts, peak RSS of each service
  against the peer   on each --set (default: the renovation set at 900 DPI,
                     the 117-page geotopo set and three Quartz sheets at 300
                     DPI, the 352-page set at 10 DPI): planzoom end to end
                     in layout FILES and ARCHIVE (with its first look: every
                     page's overview) and compute-only; the strong peer
                     (bench/peer.py: vips dzsave on poppler, two pages at a
                     time, s5cmd cp per page) end to end and to local disk;
                     the limit (PDFium render-only, libjpeg-turbo encode of
                     the same pixels); ratios to the peer, fractions of the
                     limit; the store's requests per page by kind and their
                     cost per 1,000 pages at AWS list prices
  viewers            --viewers (200) people panning a set through the gateway
                     from archives and from files, and straight from the
                     bucket (bench/viewers.py): tile latency, store GETs and
                     CPU per tile

Every case runs on the embedded SeaweedFS (behind a loopback proxy that
adds --latency-ms to every request, if given).

Peak RSS is sampled every 0.1 s over each stage's process tree (a render
service includes its PDFium worker processes).

Usage: python -m bench.run [--pdf PATH] [--runs N] [--latency-ms MS] [--no-memory]
                           [--set PATH@DPI ...] [--no-peer] [--only peer|viewers]
                           [--viewers N] [--pan-seconds S] [--pan-pause S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections import Counter
from pathlib import Path

import boto3
import pypdfium2 as pdfium

from bench.cases import (
    compute_only,
    planzoom_job,
    reference,
    request_cost,
    sheet_pdf,
    stage_seconds,
    watch_latency,
)
from bench.measure import Result
from bench.peer import limit, peer
from bench.progress import Scale, progress_at_scale
from bench.stage import Stage, tile_stage
from bench.viewers import GESTURE_COLUMNS, PAN_DPI, PAN_SET, Panning, viewers_case
from planzoom.config import Settings
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_devstack.faultproxy import FaultProxy
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY, EmbeddedStack, Ports
from services.tile.put_pool import PutPool

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PDF = ROOT.parent / "shared/corpus/arch-renovation-plans-7p-a4-affinity-latirasse.pdf"
SCRATCH_PARENT = "/dev/shm" if os.path.isdir("/dev/shm") else None
QUARTZ = ["arch-vvd1-studio-A1-autocad2017-quartz-pdfium-slow-michelagalassini-strumet.pdf",
          "arch-mos1-malm-desk-A2-autocad2016-quartz-pdfium-slow-michelagalassini-strumet.pdf",
          "arch-vvd2-nyboda-A2-autocad2017-quartz10125-pdfium-slow-michelagalassini-strumet.pdf"]
DEFAULT_SETS = [f"{DEFAULT_PDF}@900",
                f"{ROOT.parent}/shared/corpus/manypages-117p-vectorfigures-pypdf-geotopo.pdf@300",
                # CAD printed through macOS Quartz: PDFium's slow case.
                *(f"{ROOT.parent}/shared/corpus/{name}@300" for name in QUARTZ),
                # 352 pages of a few tiles each: what a page costs beyond its pixels.
                f"{ROOT.parent}/shared/corpus/manypages-352p-freeculture-pdfjs.pdf@10"]


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
    ap.add_argument("--set", dest="sets", action="append", metavar="PATH@DPI",
                    help="a set for the comparison with the strong peer (repeatable; "
                         "default: the renovation set at 900 DPI, geotopo at 300 DPI, three "
                         "Quartz sheets at 300 DPI, the 352-page set at 10 DPI)")
    ap.add_argument("--scale-pages", type=int, default=2000,
                    help="pages of the job the progress-at-scale case watches (0: skip it)")
    ap.add_argument("--no-peer", dest="peer", action="store_false",
                    help="skip the comparison with the strong peer")
    ap.add_argument("--only", choices=("peer", "viewers"),
                    help="only the comparison with the strong peer, or only viewers panning")
    ap.add_argument("--viewers", type=int, default=200,
                    help="viewers panning at once in the tile-serving case (0: skip it)")
    ap.add_argument("--pan-seconds", type=float, default=20.0,
                    help="how long the viewers pan in each tile-serving case")
    ap.add_argument("--pan-pause", type=float, default=3.0,
                    help="mean seconds a viewer reads between pan gestures (bench/viewers.py)")
    a = ap.parse_args()
    sets = [(Path(s.rsplit("@", 1)[0]), float(s.rsplit("@", 1)[1]))
            for s in (a.sets or DEFAULT_SETS)] if a.peer and a.only != "viewers" else []
    for tool in ("pdftoppm", "vips", "vipsheader"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install poppler-utils libvips-tools")

    data = Path(tempfile.mkdtemp(prefix="planzoom-bench-"))
    # Tiles that the cases write to local files go to memory (tmpfs) where
    # there is one: on a virtual disk each new small file can cost more than
    # cutting and encoding it, and that is the disk's speed, not the code's.
    scratch = Path(tempfile.mkdtemp(prefix="planzoom-bench-", dir=SCRATCH_PARENT))
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
    threads = settings.tile_put_concurrency
    client = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"],
                    token=stack.token("bench", "uploader"))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                      config=boto3.session.Config(max_pool_connections=threads))
    store = ObjectStore(settings, credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    uploads = PutPool.from_settings(settings, credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    total_pages = len(pdfium.PdfDocument(str(a.pdf)))
    pages = list(range(1, total_pages + 1))
    results = {k: Result(k, pages=total_pages) for k in (
        "reference", "reference compute", "planzoom-900", "planzoom-900 compute",
        "planzoom-900 2 tile", "planzoom-300")}
    latencies: list[float] = []
    stages: list[Stage] = []
    first_pages, tile_rates = [], []
    memory: dict[str, tuple[float, dict]] = {}
    vs_peer = {(pdf, dpi): PeerRow() for pdf, dpi in sets}
    try:
        for run in range(a.runs):
            print(f"run {run + 1}/{a.runs}", flush=True)
            for (pdf, dpi), row in vs_peer.items():
                row.measure(pdf, dpi, client, stack, endpoint, scratch, f"r{run}")
                store.delete_prefix("peer/")
            if a.only:
                continue
            secs, compute, tiles, mpx, peaks = reference(a.pdf, s3, "planzoom", scratch / "ref")
            for name, value in (("reference", secs), ("reference compute", compute)):
                r = results[name]
                r.seconds.append(value)
                r.tiles, r.megapixels, r.peak_mib = tiles, mpx, peaks
            for dpi in (900, 300):
                busy = stage_seconds(stack, "tile")
                job = planzoom_job(client, stack, a.pdf, dpi, f"r{run}-{dpi}")
                r = results[f"planzoom-{dpi}"]
                r.seconds.append(job.seconds)
                r.tiles, r.megapixels, r.peak_mib = job.tiles, job.megapixels, job.peaks
                if dpi == 900:
                    first_pages.append(job.first_page)
                    cpu_900 = job.cpu
                    tile_rates.append(job.tiles / (stage_seconds(stack, "tile") - busy))
            secs, tiles = compute_only(a.pdf, pages, 900, scratch / "compute")
            r = results["planzoom-900 compute"]
            r.seconds.append(secs)
            r.tiles, r.megapixels = tiles, results["planzoom-900"].megapixels
            # Two tile workers on the same job.
            second = stack.start_service("tile", replica=2)
            job = planzoom_job(client, stack, a.pdf, 900, f"r{run}-2t")
            stack.stop_service(second)
            r = results["planzoom-900 2 tile"]
            r.seconds.append(job.seconds)
            r.tiles, r.megapixels, r.peak_mib = job.tiles, job.megapixels, job.peaks
            latencies += watch_latency(client, stack, a.pdf, 300, f"r{run}-watch", a.watchers)
            stages.append(tile_stage(a.pdf, pages[: a.stage_pages], 900, scratch / "tile",
                                     settings, uploads))
            for prefix in ("reference/", "ceiling/", "overlapped/", "tiles/"):
                store.delete_prefix(prefix)  # each run starts from the same bucket
        scale = None
        if a.scale_pages and not a.only:
            print(f"progress at scale: a {a.scale_pages}-page job, {a.watchers} streams",
                  flush=True)
            scale = progress_at_scale(stack, a.scale_pages, a.watchers)
        panning = []
        if a.viewers and a.only in (None, "viewers"):
            print(f"tile serving: {a.viewers} viewers panning", flush=True)
            panning = viewers_case(stack, client, store, ROOT.parent / "shared/corpus" / PAN_SET,
                                   PAN_DPI, a.viewers, a.pan_seconds, a.pan_pause)
        if a.memory and not a.only:
            # One real colour drawing on a letter sheet and on a 36 x 48 in
            # sheet, both at 600 DPI: 34 MP against 622 MP.
            src = ROOT.parent / "shared/corpus/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
            for label, (w, h) in (("8.5x11 in", (8.5, 11)), ("36x48 in", (36, 48))):
                pdf = sheet_pdf(src, 2, w, h, data / f"sheet-{w}x{h}.pdf")
                for layout in (jobs_pb2.PYRAMID_LAYOUT_FILES, jobs_pb2.PYRAMID_LAYOUT_ARCHIVE):
                    name = jobs_pb2.PyramidLayout.Name(layout).rsplit("_", 1)[1].lower()
                    job = planzoom_job(client, stack, pdf, 600,
                                       f"mem-{w:g}x{h:g}-{name}".replace(".", "-"), layout)
                    memory[f"{label}, {name}"] = (job.megapixels, job.peaks)
    finally:
        uploads.close()
        client.close()
        stack.stop()
        if proxy:
            proxy.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    if a.only:
        if vs_peer:
            print_vs_peer(vs_peer, a.runs)
        print_panning(panning, a.pan_pause)
        return
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
    procs = settings.tile_put_processes
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
    if scale:
        print_scale(scale)
    if vs_peer:
        print_vs_peer(vs_peer, a.runs)
    print_panning(panning, a.pan_pause)
    if memory:
        print()
        print("peak RSS by sheet size, 600 DPI, one colour page (MiB):")
        for label, (mpx, peaks) in memory.items():
            print(f"  {label:<19} {mpx:>6.0f} MP  " +
                  ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))


class PeerRow:
    """One set's measurements against the strong peer, run by run."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {k: [] for k in (
            "planzoom", "planzoom archive", "planzoom compute", "peer", "peer local",
            "compute without sheets")}
        #: the store's requests per page of each end-to-end case, by kind
        self.requests: dict[str, Counter] = {}
        #: requests per page that stored the pyramid (planzoom's cases)
        self.pyramid_requests: dict[str, float] = {}
        self.limits = []
        self.first_look: list[float] = []  # submit → every page's overview
        self.first_page: list[float] = []  # submit → the first page DONE
        self.megapixels = 0.0
        self.pages = 0

    def measure(self, pdf: Path, dpi: float, client, stack, endpoint: str, data: Path,
                tag: str) -> None:
        pages = list(range(1, len(pdfium.PdfDocument(str(pdf))) + 1))
        self.pages = len(pages)
        print(f"  {pdf.name} at {dpi:g} DPI: peer to disk, peer end to end, planzoom end to "
              f"end, planzoom compute, the limit", flush=True)
        creds = (S3_ACCESS_KEY, S3_SECRET_KEY)
        self.seconds["peer local"].append(peer(pdf, pages, dpi, data / "peer", None,
                                               "planzoom", creds))
        before = stack.s3_requests()
        self.seconds["peer"].append(peer(pdf, pages, dpi, data / "peer", endpoint,
                                         "planzoom", creds))
        self.requests["peer"] = per_page(stack.s3_requests() - before, len(pages))
        for case, layout in (("planzoom", jobs_pb2.PYRAMID_LAYOUT_FILES),
                             ("planzoom archive", jobs_pb2.PYRAMID_LAYOUT_ARCHIVE)):
            job = planzoom_job(client, stack, pdf, dpi,
                               f"{tag}-{layout}-{pdf.stem[:20]}-{dpi:g}".replace(".", "-"),
                               layout)
            self.seconds[case].append(job.seconds)
            self.requests[case] = per_page(job.s3_requests, len(pages))
            self.pyramid_requests[case] = job.pyramid_requests / len(pages)
        self.megapixels = job.megapixels
        self.first_page.append(job.first_page)
        if job.first_look is not None:
            self.first_look.append(job.first_look)
        self.seconds["planzoom compute"].append(
            compute_only(pdf, pages, dpi, data / "compute")[0])
        self.seconds["compute without sheets"].append(
            compute_only(pdf, pages, dpi, data / "compute", text=False)[0])
        self.limits.append(limit(pdf, pages, dpi))


def per_page(requests: Counter, pages: int) -> Counter:
    """``requests`` (by kind) divided among ``pages``."""
    return Counter({kind: n / pages for kind, n in requests.items()})


def print_scale(s: Scale) -> None:
    lat = sorted(s.latencies)

    def ms(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]

    whole = s.updates_per_stream * s.snapshot_bytes
    print(f"progress at scale: a {s.pages}-page job, {s.watchers} WatchJob streams, "
          f"{s.reported} pages reported rendering/tiling/done at 10 a second:")
    print(f"  page done -> a stream has it, {len(lat)} deliveries: p50 {ms(0.5):.0f} ms, "
          f"p99 {ms(0.99):.0f} ms, max {1000 * lat[-1]:.0f} ms")
    print(f"  each stream: {s.updates_per_stream:.0f} updates, {s.bytes_per_stream / 1024:.0f} "
          f"KiB (a snapshot is {s.snapshot_bytes / 1024:.0f} KiB; whole records at every "
          f"update would be {whole / 2**20:.0f} MiB)")
    print(f"  progress service CPU: {s.cpu_seconds:.1f} s for {s.events} events "
          f"({1000 * s.cpu_seconds / s.events:.1f} ms per event)")


def print_panning(rows: list[Panning], pause: float) -> None:
    if not rows:
        return
    print()
    print(f"tiles while viewers pan (bench/viewers.py: {PAN_SET[:40]} at {PAN_DPI:g} DPI, full "
          f"resolution, 1920x1080 views, a gesture of {GESTURE_COLUMNS} tile columns every "
          f"{pause:g} s on average, 6 connections per viewer; warm; latency from the "
          f"request's sending and from the gesture's start; store GETs per tile served; "
          f"CPU ms per tile of the gateway, the store and the viewers' "
          f"process, {os.cpu_count()} cores for all):")
    head = (f"  {'':<18}{'':>8}{'':>8}{'':>8}{'request ms':>21}{'gesture ms':>14}")
    print(head)
    head = (f"  {'case':<18}{'viewers':>8}{'tiles':>8}{'tiles/s':>8}{'p50':>7}{'p99':>7}"
            f"{'max':>7}{'p50':>7}{'p99':>7}{'errors':>7}{'GETs/tile':>10}  CPU ms a tile")
    print(head)
    for r in rows:
        cpu = ", ".join(f"{k} {1000 * v / max(1, r.tiles):.2f}" for k, v in r.cpu.items())
        print(f"  {r.case:<18}{r.viewers:>8}{r.tiles:>8}{r.tiles / r.seconds:>8.0f}"
              f"{r.ms(0.5):>7.1f}{r.ms(0.99):>7.1f}{r.ms(1.0):>7.1f}{r.ms(0.5, True):>7.1f}"
              f"{r.ms(0.99, True):>7.1f}{r.errors:>7}{r.store_gets:>10.2f}  {cpu}")


def print_vs_peer(rows: dict[tuple[Path, float], PeerRow], runs: int) -> None:
    med = statistics.median
    cores = os.cpu_count() or 1
    print()
    print(f"against the strong peer (vips dzsave on poppler, 2 pages at a time, s5cmd cp per "
          f"page) and the limit on {cores} cores; medians of {runs} run(s):")
    head = (f"{'set':<34}{'DPI':>5}{'pages':>6}{'MP':>8}  {'case':<18}{'wall s':>8}"
            f"{'MP/s':>7}{'x peer':>8}{'of limit':>9}")
    print(head)
    print("-" * len(head))
    for (pdf, dpi), row in rows.items():
        lim = row.limits
        compute_limit = med(x.compute_mp_s(cores) for x in lim)
        name = pdf.stem[:33]
        for case, versus in (("planzoom", "peer"), ("planzoom archive", "peer"), ("peer", "peer"),
                             ("planzoom compute", "peer local"), ("peer local", "peer local")):
            secs = med(row.seconds[case])
            rate = row.megapixels / secs
            share = f"{100 * rate / compute_limit:>8.0f}%" if "compute" in case or \
                case == "peer local" else ""
            print(f"{name:<34}{dpi:>5g}{row.pages:>6}{row.megapixels:>8.0f}  {case:<18}"
                  f"{secs:>8.1f}{rate:>7.1f}{med(row.seconds[versus]) / secs:>8.2f}{share}")
        print(f"{'':<53}limit: PDFium {med(x.render_mp_s for x in lim):.0f} MP/s per core, "
              f"libjpeg-turbo {med(x.encode_mp_s for x in lim):.0f} MP/s per core "
              f"-> render+pyramid+encode {compute_limit:.0f} MP/s on {cores} cores")
    print("(x peer: end-to-end rows against the peer end to end, compute rows against the "
          "peer to local disk; of limit: the row's MP/s over the limit's; planzoom: layout "
          "FILES, planzoom archive: layout ARCHIVE)")
    print()
    print("S3 requests per page (the store's own count, by kind, over the whole run of each "
          "case; pyramid: those that stored the tiles or the archive) and their cost per "
          "1,000 pages at AWS S3 list prices (PUT, POST, COPY, LIST $0.005 and GET, HEAD "
          "$0.0004 per 1,000):")
    for (pdf, dpi), row in rows.items():
        for case in ("planzoom", "planzoom archive", "peer"):
            if case not in row.requests:
                continue
            kinds = row.requests[case]
            pyramid = f", pyramid {row.pyramid_requests[case]:.1f}" if case in \
                row.pyramid_requests else ""
            print(f"  {pdf.stem[:33]:<34}{dpi:>5g} DPI  {case:<17}"
                  f"{sum(kinds.values()):>8.1f} a page{pyramid} ("
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items()))
                  + f"); ${1000 * request_cost(kinds):.2f} per 1,000 pages")
    print()
    print("sheets (each page's words and sheet candidates read beside its render, "
          "planzoom.engines.text): planzoom compute with them against without, medians:")
    for (pdf, dpi), row in rows.items():
        with_, without = med(row.seconds["planzoom compute"]), med(
            row.seconds["compute without sheets"])
        print(f"  {pdf.stem[:33]:<34}{dpi:>5g} DPI {row.pages:>4} pages: {with_:.2f} s against "
              f"{without:.2f} s, {100 * (with_ / without - 1):+.1f} %")
    print()
    print("first look, planzoom end to end (submit → every page's overview, a level of its "
          "pyramid; → the first page at full resolution; all pages, and that per page, "
          "which on tiny pages is what a page costs beyond its pixels):")
    for (pdf, dpi), row in rows.items():
        look = f"{med(row.first_look):.1f} s" if row.first_look else "never"
        print(f"  {pdf.stem[:33]:<34}{dpi:>5g} DPI {row.pages:>4} pages: every page {look}, "
              f"first page full {med(row.first_page):.1f} s, "
              f"all {med(row.seconds['planzoom']):.1f} s, "
              f"{1000 * med(row.seconds['planzoom']) / row.pages:.0f} ms a page")


if __name__ == "__main__":
    main()
