"""A page's pyramid in one object: PMTiles v3 (planzoom.engines.archive)
against a zip with a central directory and stored tiles (the ``.szi``
convention libvips writes), on one real sheet. Prints what a reader
fetches before its first tile and the object's size.

Usage: python -m bench.layouts [--pdf PATH] [--page N] [--dpi DPI]
"""

from __future__ import annotations

import argparse
import io
import struct
import tempfile
import zipfile
from pathlib import Path

from planzoom.dzi import DziInfo, dzi_xml, tile_name
from planzoom.engines import pdf as pdf_engine
from planzoom.engines.archive import HEAD_BYTES, ArchiveIndex, ArchiveWriter
from planzoom.engines.pyramid import cut_pyramid
from planzoom.engines.raster import raster_rows
from planzoom.v1 import jobs_pb2

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PDF = ROOT.parent / "shared/corpus/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
EOCD = 22  # a zip's end of central directory record, without a comment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdf", type=Path, default=DEFAULT_PDF)
    ap.add_argument("--page", type=int, default=1)
    ap.add_argument("--dpi", type=float, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        raster_path = f"{work}/page.raw.zst"
        options = jobs_pb2.JobOptions(dpi=a.dpi, max_page_pixels=10**10)
        r = pdf_engine.rasterize(str(a.pdf), pdf_engine.geometry(str(a.pdf), a.page, options),
                                 raster_path, 64 << 20)
        parts: dict[int, bytes] = {}
        dzi = DziInfo(r.width_px, r.height_px, 256, 1, "jpg")
        writer = ArchiveWriter(dzi, parts.__setitem__)
        tiles: list[tuple[str, bytes]] = []

        def keep(level: int, col: int, row: int, data: bytes) -> None:
            writer.add(level, col, row, data)
            tiles.append((tile_name(level, col, row, "jpg"), data))

        with open(raster_path, "rb") as f:
            cut_pyramid(raster_rows(f, r.width_px, r.height_px, r.bands), r.width_px,
                        r.height_px, r.bands, 256, 1, 90, keep)
    written = writer.finish()
    archive = written.head + b"".join(parts[n] for n in sorted(parts))
    index = ArchiveIndex.parse(archive[:HEAD_BYTES], lambda o, n: archive[o:o + n])
    header = index.header
    root_and_meta = header["root_length"] + header["metadata_length"]
    leaves = header["leaf_directory_length"]

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("page.dzi", dzi_xml(dzi))
        for name, data in tiles:
            z.writestr(f"page_files/{name}", data)
    packed = out.getvalue()
    cd_size = struct.unpack("<I", packed[-EOCD + 12:-EOCD + 16])[0]
    jpeg = sum(len(d) for _, d in tiles)
    print(f"{a.pdf.name} page {a.page} at {a.dpi:g} DPI: {r.width_px} x {r.height_px} px, "
          f"{len(tiles):,} tiles, {jpeg / 1e6:.2f} MB of JPEG")
    print(f"{'':<12}{'directory before the first tile':>34}{'requests':>10}{'object MB':>11}")
    print(f"{'PMTiles':<12}{(header['root_offset'] + root_and_meta) / 1024:>29.1f} KiB"
          f"{1:>10}{len(archive) / 1e6:>11.2f}   (leaf directories {leaves / 1024:.1f} KiB, "
          f"read as tiles need them; {header['tile_contents_count']:,} distinct tiles)")
    print(f"{'zip, stored':<12}{cd_size / 1024:>29.1f} KiB{2:>10}{len(packed) / 1e6:>11.2f}"
          f"   (the end record, then the central directory)")


if __name__ == "__main__":
    main()
