"""Viewers panning: tiles through the gateway from archives (layout
ARCHIVE), from one object per tile (layout FILES), and straight from the
bucket by presigned URL (what a user gets by serving a FILES job's bucket
to the browser, or behind a CDN), side by side on the same store.

Each viewer is a person reading a sheet at full resolution in a 1920 x 1080
viewport: a pan gesture moves the view :data:`GESTURE_COLUMNS` tile columns
right (wrapping at the page's edge, down a row when it wraps) and fetches
the tiles that come into view, up to 6 at once (a browser's connections to
one host); then the person reads for a pause drawn uniformly from 0.5 to
1.5 times ``pause`` seconds. Gestures are scheduled in advance, and a
tile's latency is measured from its request's sending and from its
gesture's scheduled start (what the person waits, the browser's queue for
a connection included) to its last byte, so a slow server cannot slow the
viewers down and hide its queue. Each
viewer has its own signed link (``?cap=``, as the viewer page uses), so the
per-caller rate applies to each alone. "Warm": every viewer's first screen
(its page's descriptor, so the archive's directory, and its tiles) is
fetched before the clock starts. The load runs in its own process
(asyncio, aiohttp).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass, field

import httpx

from bench.measure import tree_cpu_seconds
from planzoom.dzi import parse_dzi
from planzoom_devstack.stack import EmbeddedStack

VIEWPORT = (1920, 1080)  # pixels
CONNECTIONS = 6  # a browser's connections to one host
GESTURE_COLUMNS = 2  # tile columns one pan gesture moves the view


@dataclass
class Panning:
    """One case's measured window."""

    case: str
    viewers: int
    seconds: float
    #: seconds, each tile: (from its request's sending, from its gesture's start)
    latencies: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0  # responses other than 200
    store_gets: float = 0.0  # the store's GETs per tile served
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: gateway, store, viewers

    @property
    def tiles(self) -> int:
        return len(self.latencies)

    def ms(self, q: float, gesture: bool = False) -> float:
        """The ``q`` quantile of the tiles' latencies, milliseconds: from
        each request's sending, or from its gesture's start."""
        lat = sorted(x[gesture] for x in self.latencies)
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")


def walks(grids: list[tuple[int, int, int]], viewers: int, seconds: float, pause: float,
          tile_size: int, seed: int = 7) -> list[tuple[int, list[tuple[float, list]]]]:
    """Each viewer's page and its gestures over ``seconds``: (start, tiles
    (level, col, row) that come into view), the start in seconds from the
    clock's start; the first entry is the first whole screen (start 0).
    ``grids``: each page's (top level, columns, rows)."""
    rng = random.Random(seed)
    wide = -(-VIEWPORT[0] // tile_size) + 1
    high = -(-VIEWPORT[1] // tile_size) + 1
    out = []
    for v in range(viewers):
        page = v % len(grids)
        level, cols, rows = grids[page]
        col, row = rng.randrange(cols), rng.randrange(max(1, rows - high + 1))
        screen = [(level, (col + c) % cols, min(rows - 1, row + r))
                  for c in range(min(wide, cols)) for r in range(min(high, rows))]
        path = [(0.0, sorted(set(screen)))]
        at = rng.uniform(0, pause)  # viewers do not start in step
        while at < seconds:
            tiles = set()
            for _ in range(GESTURE_COLUMNS):
                col += 1
                if col >= cols:
                    col, row = 0, (row + 1) % max(1, rows - high + 1)
                right = (col + wide - 1) % cols
                tiles |= {(level, right, min(rows - 1, row + r)) for r in range(min(high, rows))}
            path.append((at, sorted(tiles)))
            at += rng.uniform(0.5 * pause, 1.5 * pause)
        out.append((page + 1, path))
    return out


async def _viewer(session, gestures: list[tuple[float, list[tuple[str, dict]]]], start: float,
                  latencies: list[tuple[float, float]], errors: list[int]) -> None:
    connections = asyncio.Semaphore(CONNECTIONS)
    async def fetch(request: tuple[str, dict], asked: float) -> None:
        url, headers = request
        async with connections:  # the browser's queue: a request waits for a connection
            sent = time.monotonic()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                ok = resp.status in (200, 206)
        if not ok:
            errors[0] += 1
            return
        done = time.monotonic()
        latencies.append((done - sent, done - asked))

    for at, urls in gestures:
        asked = start + at
        await asyncio.sleep(max(0.0, asked - time.monotonic()))
        await asyncio.gather(*(fetch(r, asked) for r in urls))


async def _load(per_viewer: list[list[tuple[float, list[tuple[str, dict]]]]]) -> tuple[list, int]:
    import aiohttp

    latencies: list[float] = []
    errors = [0]
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS))
                for _ in per_viewer]
    start = time.monotonic() + 0.5
    try:
        await asyncio.gather(*(_viewer(s, gestures, start, latencies, errors)
                               for s, gestures in zip(sessions, per_viewer, strict=True)))
    finally:
        for s in sessions:
            await s.close()
    return latencies, errors[0]


def _run_load(per_viewer: list[list[tuple[float, list[tuple[str, dict]]]]]) -> tuple[list, int]:
    return asyncio.run(_load(per_viewer))


def pan(stack: EmbeddedStack, case: str, job_id: str, org: str, viewers: int,
        seconds: float, pause: float, presign=None) -> Panning:
    """``viewers`` panning ``job_id``'s pages for ``seconds`` (after the
    warm first screen), ``pause`` seconds apart on average. Tiles come
    through the gateway, or, given ``presign(page, level, col, row) ->
    (url, headers)``, straight from the bucket."""
    base = f"{stack.gateway_url}/v1/jobs/{job_id}"
    with httpx.Client(timeout=60) as http:
        caps = []
        for v in range(viewers):
            token = stack.issuer.mint(org, "viewer", subject=f"bench-viewer-{v}")
            links = http.get(f"{base}/links", headers={"Authorization": f"Bearer {token}"})
            links.raise_for_status()
            caps.append(links.json()["cap"])
        pages = len(links.json()["dzi"])
        dzis = [parse_dzi(http.get(f"{base}/pages/{n}.dzi", params={"cap": caps[0]}).content)
                for n in range(1, pages + 1)]
    grids = [(d.levels - 1, *d.grid(d.levels - 1)) for d in dzis]
    warm, measured = [], []
    for v, (page, path) in enumerate(walks(grids, viewers, seconds, pause,
                                           dzis[0].tile_size)):
        def url(level: int, col: int, row: int, page=page, cap=caps[v]) -> tuple[str, dict]:
            if presign is not None:
                return presign(page, level, col, row)
            return f"{base}/pages/{page}_files/{level}/{col}_{row}.jpg?cap={cap}", {}
        first = [(f"{base}/pages/{page}.dzi?cap={caps[v]}", {})] if presign is None else []
        warm.append([(0.0, first + [url(*t) for t in path[0][1]])])
        measured.append([(at, [url(*t) for t in tiles]) for at, tiles in path[1:]])
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        pool.apply(_run_load, (warm,))
        pids = {"gateway": stack.procs["gateway"].pid, "store": stack.procs["s3"].pid,
                "viewers": pool._pool[0].pid}
        gets, cpu = stack.s3_requests()["GET"], {n: tree_cpu_seconds(p) for n, p in pids.items()}
        t0 = time.monotonic()
        latencies, errors = pool.apply(_run_load, (measured,))
        wall = time.monotonic() - t0
        gets = stack.s3_requests()["GET"] - gets
        cpu = {n: tree_cpu_seconds(p) - cpu[n] for n, p in pids.items()}
    return Panning(case, viewers, wall, latencies, errors, gets / max(1, len(latencies)), cpu)


#: The set the viewers pan: eight A1 sheets of drawings and raster images.
PAN_SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PAN_DPI = 200.0


def viewers_case(stack: EmbeddedStack, client, store, pdf, dpi: float, viewers: int,
                 seconds: float, pause: float) -> list[Panning]:
    """``pdf`` at ``dpi`` in both layouts, then ``viewers`` panning it for
    ``seconds`` in each case: through the gateway from the archives and
    from the files; straight from the bucket, by range GETs of each page's
    archive at a presigned URL (what the viewer's ``#source=archive`` does)
    and by a presigned GET of each tile's file."""
    from bench.cases import planzoom_job
    from planzoom import keys
    from planzoom.dzi import tile_name
    from planzoom.engines.archive import ArchiveIndex
    from planzoom.v1 import jobs_pb2

    jobs = {}
    for layout in (jobs_pb2.PYRAMID_LAYOUT_ARCHIVE, jobs_pb2.PYRAMID_LAYOUT_FILES):
        jobs[layout] = planzoom_job(client, stack, pdf, dpi, f"pan-{layout}", layout).job
    archive, files = jobs[jobs_pb2.PYRAMID_LAYOUT_ARCHIVE], jobs[jobs_pb2.PYRAMID_LAYOUT_FILES]
    signed = {p.page: (store.presigned_get(p.archive_key, 3600), ArchiveIndex.load(
        lambda o, n, k=p.archive_key: store.get_range(k, o, n)), p.archive_key)
        for p in archive.pages}

    def file_url(page: int, level: int, col: int, row: int) -> tuple[str, dict]:
        key = keys.page_files_prefix(files.plan, files.job_id, page) + tile_name(
            level, col, row, "jpg")
        return store.presigned_get(key, 3600), {}

    def archive_range(page: int, level: int, col: int, row: int) -> tuple[str, dict]:
        url, index, key = signed[page]
        offset, length = index.locate(level, col, row, lambda o, n: store.get_range(key, o, n))
        return url, {"Range": f"bytes={offset}-{offset + length - 1}"}

    out = []
    for case, job, direct in (("archive, gateway", archive, None),
                              ("files, gateway", files, None),
                              ("archive, bucket", archive, archive_range),
                              ("files, bucket", files, file_url)):
        print(f"  {viewers} viewers panning: {case}", flush=True)
        out.append(pan(stack, case, job.job_id, job.plan.org, viewers, seconds, pause, direct))
    return out
