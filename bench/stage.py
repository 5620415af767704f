"""The tile stage alone, on the same rasters: planzoom's pyramid against
``vips dzsave``, the storage endpoint's ceiling, the tile service's code
(pyramid and uploads overlapped), one against two tile worker processes."""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import subprocess
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bench.cases import render_all, tile_to_disk
from planzoom.config import Settings
from planzoom.dzi import tile_name
from planzoom.engines.pyramid import cut_pyramid
from planzoom.engines.raster import raster_rows
from planzoom.storage import ObjectStore
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY
from services.tile.put_pool import PutPool, threads_per_process


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
    PLANZOOM_TILE_PUT_CONCURRENCY threads to PUT ``bodies`` (see _bare_puts)."""
    threads = threads_per_process(settings.tile_put_concurrency, processes)
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
               uploads: PutPool) -> Stage:
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
    upload_procs = bare_upload(settings, bodies, settings.tile_put_processes, small=True)
    # (4) what the tile service does: pyramid cut while its upload processes
    # PUT the tiles
    prefix = f"overlapped/{int(time.time() * 1000)}/"
    t0 = time.monotonic()
    for page, r, raster in rasters:
        with open(raster, "rb") as f:
            def put(level: int, col: int, row: int, data: bytes, page=page) -> Future:
                return uploads.put(f"{prefix}page-{page}_files/{tile_name(level, col, row, 'jpg')}",
                                   data, "image/jpeg")
            cut_pyramid(raster_rows(f, r.width_px, r.height_px, r.bands), r.width_px,
                        r.height_px, r.bands, 256, 1, 90, put,
                        max_in_flight=4 * settings.tile_put_concurrency)
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
