"""Deep Zoom Image (DZI) arithmetic and descriptor parsing.

Source: the DZI schema (namespace http://schemas.microsoft.com/deepzoom/2008)
and OpenSeadragon's ``DziTileSource``. Level 0 is 1x1 pixel; the highest level
(``levels - 1``) is full resolution; level ``l`` has size
``ceil(width / 2**(levels-1-l)) x ceil(height / 2**(levels-1-l))``, which is
how libvips ``dzsave`` (``depth=onepixel``) halves with rounding up. Each level
is cut into ``ceil(w / tile_size) x ceil(h / tile_size)`` tiles; a tile at
column ``c`` covers ``[c*tile_size - overlap, (c+1)*tile_size + overlap)``
clipped to the level, so inner edges carry ``overlap`` extra pixels.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from planzoom.clock import now_ts
from planzoom.v1 import jobs_pb2

DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"


@dataclass(frozen=True)
class DziInfo:
    width: int  # full-resolution pixels
    height: int
    tile_size: int  # pixels, without overlap
    overlap: int  # pixels
    format: str  # tile file suffix without the dot, e.g. "jpg"

    @property
    def levels(self) -> int:
        return level_count(self.width, self.height)

    def level_size(self, level: int) -> tuple[int, int]:
        return level_size(self.width, self.height, level)

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def tile_count(self) -> int:
        total = 0
        for level in range(self.levels):
            cols, rows = self.grid(level)
            total += cols * rows
        return total

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(left, top, width, height) in level pixels of tile (col, row),
        overlap included."""
        w, h = self.level_size(level)
        x0 = max(0, col * self.tile_size - self.overlap)
        y0 = max(0, row * self.tile_size - self.overlap)
        x1 = min(w, (col + 1) * self.tile_size + self.overlap)
        y1 = min(h, (row + 1) * self.tile_size + self.overlap)
        return x0, y0, x1 - x0, y1 - y0


def tile_name(level: int, col: int, row: int, fmt: str) -> str:
    """A tile's path under its page's ``_files/`` folder:
    ``<level>/<col>_<row>.<fmt>`` (the DZI layout)."""
    return f"{level}/{col}_{row}.{fmt}"


def level_count(width: int, height: int) -> int:
    """ceil(log2(max(width, height))) + 1 levels, down to 1x1 pixel."""
    return math.ceil(math.log2(max(width, height))) + 1 if max(width, height) > 1 else 1


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    shift = level_count(width, height) - 1 - level
    return max(1, math.ceil(width / 2**shift)), max(1, math.ceil(height / 2**shift))


def dzi_xml(info: DziInfo) -> bytes:
    """The ``.dzi`` descriptor for ``info``, as libvips ``dzsave`` writes it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="{DZI_NS}" Format="{info.format}" Overlap="{info.overlap}" '
        f'TileSize="{info.tile_size}">\n'
        f'  <Size Height="{info.height}" Width="{info.width}"/>\n'
        '</Image>\n'
    ).encode()


def parse_dzi(xml: bytes | str) -> DziInfo:
    """Parse a ``.dzi`` descriptor. Raises ValueError if it is not one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ValueError(f"not a DZI descriptor: {e}") from e
    if root.tag != f"{{{DZI_NS}}}Image":
        raise ValueError(f"not a DZI descriptor: root element {root.tag!r}")
    size = root.find(f"{{{DZI_NS}}}Size")
    if size is None:
        raise ValueError("DZI descriptor has no Size element")
    return DziInfo(
        width=int(size.attrib["Width"]),
        height=int(size.attrib["Height"]),
        tile_size=int(root.attrib["TileSize"]),
        overlap=int(root.attrib["Overlap"]),
        format=root.attrib["Format"],
    )


def done_record(page: int, dzi: DziInfo) -> jobs_pb2.PageRecord:
    """The PageRecord that reports ``page`` complete with this descriptor
    (where its outputs are follows from the job: planzoom.keys)."""
    return jobs_pb2.PageRecord(
        page=page, state=jobs_pb2.PAGE_STATE_DONE, width_px=dzi.width, height_px=dzi.height,
        tile_size=dzi.tile_size, overlap=dzi.overlap, format=dzi.format, levels=dzi.levels,
        tile_count=dzi.tile_count(), finished_at=now_ts(),
    )
