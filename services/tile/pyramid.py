"""Raw raster → DZI pyramid on local disk, with libvips ``dzsave``.

Layout written (the DZI format; libvips ``dzsave`` with ``layout=dz``)::

    <out_dir>/<name>.dzi
    <out_dir>/<name>_files/<level>/<col>_<row>.jpg

Levels run from 0 (1x1 pixel) to ceil(log2(max(w, h))) (full resolution)
(``depth=onepixel``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyvips
import zstandard

from planzoom.dzi import DziInfo, parse_dzi


class RasterUnreadable(Exception):
    """The raster is not what its TileJob says (size, encoding)."""


def decompress_raster(stream, out_path: str, expected_bytes: int) -> None:
    """Write the zstd-compressed raw raster read from ``stream`` to
    ``out_path``; raise RasterUnreadable unless it has ``expected_bytes``."""
    written = 0
    try:
        with open(out_path, "wb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(stream)
            while chunk := reader.read(8 * 1024 * 1024):
                written += len(chunk)
                if written > expected_bytes:
                    break
                f.write(chunk)
    except zstandard.ZstdError as e:
        raise RasterUnreadable(f"raster is not a valid zstd stream: {e}") from None
    if written != expected_bytes:
        raise RasterUnreadable(
            f"raster holds {written} bytes or more, expected {expected_bytes}"
        )


def build_pyramid(raw_path: str, width: int, height: int, bands: int, out_dir: str,
                  name: str, tile_size: int, overlap: int, jpeg_quality: int) -> DziInfo:
    """Cut the raw raster (``width`` x ``height`` pixels, ``bands`` 8-bit
    samples each, row-major) into a DZI pyramid of JPEG tiles under
    ``out_dir``. Returns the descriptor as written."""
    image = pyvips.Image.rawload(raw_path, width, height, bands)
    image = image.copy(interpretation="srgb" if bands >= 3 else "b-w")
    image.dzsave(
        os.path.join(out_dir, name),
        layout="dz",
        depth="onepixel",
        tile_size=tile_size,
        overlap=overlap,
        suffix=f".jpg[Q={jpeg_quality}]",
        keep="none",
    )
    with open(os.path.join(out_dir, f"{name}.dzi"), "rb") as f:
        return parse_dzi(f.read())


def tile_files(out_dir: str, name: str) -> Iterator[tuple[str, str]]:
    """(path, relative key) of every tile under ``<name>_files``; other files
    dzsave may leave there (``vips-properties.xml``) are skipped."""
    root = os.path.join(out_dir, f"{name}_files")
    for level in os.listdir(root):
        level_dir = os.path.join(root, level)
        if not level.isdigit() or not os.path.isdir(level_dir):
            continue
        for tile in os.listdir(level_dir):
            yield os.path.join(level_dir, tile), f"{name}_files/{level}/{tile}"
