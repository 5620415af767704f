"""planzoom's still-image path per kind, on the largest file of each kind in
``../shared/corpus/media/``, beside the simplest alternative a user could
script: ``vips copy`` of the same file to an 8-bit sRGB raw (libvips' own
decode, no orientation, profile or variant work).

For each file, in a fresh process (so peak memory is the file's own): the
render worker's two calls, :func:`planzoom.engines.image.rasterize`
(decode, normalise, write the zstd raster) and
:func:`planzoom.engines.image.variants` (thumbnail, icon, three
WebP sizes, watermarked display image). Prints megapixels per second of the
decode (source pixels / seconds), the variants' seconds, the process's peak
RSS (VmHWM), and the ratio to the alternative. Medians over --runs runs.

Videos: each corpus video, and the chaplin clip six times over (a minute),
transcoded one rung at a time by :func:`planzoom.engines.video.transcode`
(the ladder restricted to that rung) and with its whole ladder: seconds of
video per second of transcoding ("x real time").

Usage: python -m bench.media [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planzoom.media import sniff
from planzoom_devstack.samples import repeated_video

MEDIA = Path(os.environ.get("PLANZOOM_CORPUS", Path(__file__).resolve().parents[2] / "shared"
                            / "corpus")) / "media"

_CHILD = """
import json, sys, tempfile, time
from planzoom.engines import Limits, geometries, image
from planzoom.media import KINDS
from planzoom.options import resolve_variants
from planzoom.v1 import jobs_pb2
path, kind = sys.argv[1], KINDS[sys.argv[2]]
out = tempfile.mkdtemp()
t0 = time.perf_counter()
info = image.inspect(path, kind, Limits(max_pages=100, max_image_pixels=200_000_000))
page = geometries(info, jobs_pb2.JobOptions())[0]
r = image.rasterize(path, kind, page, out + "/raster.zst", 64 * 1024 * 1024)
t1 = time.perf_counter()
image.variants(path, kind, page, resolve_variants(jobs_pb2.VariantOptions()), "bench", out)
t2 = time.perf_counter()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"pixels": r.width_px * r.height_px, "raster": t1 - t0, "variants": t2 - t1,
                  "hwm_kib": hwm}))
"""


def largest_per_kind() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(MEDIA.iterdir()):
        if path.name.startswith(("hostile", "video")) or path.suffix == ".md":
            continue
        try:
            kind = sniff(path.read_bytes()[:1024]).name
        except Exception:
            continue
        if kind not in found or path.stat().st_size > found[kind].stat().st_size:
            found[kind] = path
    return found


def ours(path: Path, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), kind], capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout)


def alternative(path: Path) -> float:
    """Seconds of ``vips colourspace`` to an 8-bit sRGB .v file."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(["vips", "colourspace", str(path), f"{tmp}/out.v", "srgb"], check=True,
                       capture_output=True, timeout=600)
        return time.perf_counter() - t0


_VIDEO_CHILD = """
import dataclasses, json, sys, tempfile, time
import planzoom.engines.video as video
path, rung = sys.argv[1], sys.argv[2]
info = dataclasses.asdict(video.probe(path, 7200, 10**9))
full = video.ladder(info["width"], info["height"])
if rung != "all":
    video.ladder = lambda w, h: [r for r in full if r[0] == rung]
out = tempfile.mkdtemp()
t0 = time.perf_counter()
video.transcode(path, out, info, out + "/.progress")
print(json.dumps({"seconds": time.perf_counter() - t0, "duration": info["duration_seconds"],
                  "rungs": [r[0] for r in full]}))
"""


def _video(path: Path, rung: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _VIDEO_CHILD, str(path), rung],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout)


def videos(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(p for p in MEDIA.iterdir() if p.name.startswith("video"))
        files.append(repeated_video(MEDIA / "video-h264-mp4-chaplin-moviepy.mp4",
                                   Path(tmp) / "chaplin-x6.mp4", 6))
        print(f"\n{'video':44} {'s':>6} {'rung':>6} {'x real time':>12}")
        for path in files:
            rungs = _video(path, "all")["rungs"]
            for rung in [*rungs, "all"]:
                done = [_video(path, rung) for _ in range(runs)]
                seconds = statistics.median(d["seconds"] for d in done)
                print(f"{path.name[:44]:44} {done[0]['duration']:6.1f} {rung:>6} "
                      f"{done[0]['duration'] / seconds:11.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for kind, path in largest_per_kind().items():
        runs = [ours(path, kind) for _ in range(args.runs)]
        raster = statistics.median(r["raster"] for r in runs)
        variants = statistics.median(r["variants"] for r in runs)
        pixels = runs[0]["pixels"]
        try:
            alt = statistics.median(alternative(path) for _ in range(args.runs))
        except (subprocess.CalledProcessError, FileNotFoundError):
            alt = None  # Debian's libvips cannot read it (HEVC, RAW)
        rows.append((kind, path.name[:44], pixels / 1e6, pixels / 1e6 / raster, variants,
                     max(r["hwm_kib"] for r in runs) / 1024, alt and alt / raster))
    print(f"{'kind':6} {'file':44} {'MP':>6} {'MP/s':>7} {'variants s':>10} "
          f"{'peak MiB':>8} {'vs vips':>8}")
    for kind, name, mp, rate, var, peak, ratio in rows:
        vs = f"{ratio:.2f}x" if ratio else "n/a"
        print(f"{kind:6} {name:44} {mp:6.1f} {rate:7.1f} {var:10.2f} {peak:8.0f} {vs:>8}")
    print("MP/s: source megapixels per second of decode + normalise + raster write; "
          "'vs vips': the alternative's seconds / ours (above 1: planzoom is faster).")
    videos(args.runs)


if __name__ == "__main__":
    main()
