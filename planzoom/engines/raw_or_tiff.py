"""RAW or TIFF for a TIFF-structured file, from its whole structure
(:func:`planzoom.media.tiff_layout`) and, where that leaves it open, from
whether LibRaw unpacks more than its largest ordinary image: never from the
maker it names. Runs in the sandboxed worker that reads the file."""

from __future__ import annotations

from planzoom.engines.base import Limits
from planzoom.media import HEADER_WINDOW, RAW, TIFF, Kind, raw_magic, tiff_layout


def effective_kind(path: str, kind: Kind, limits: Limits | None = None) -> Kind:
    """RAW or TIFF for a file ingest sniffed as either, from its whole
    structure (:func:`planzoom.media.tiff_layout`), never from the maker it
    names; any other kind as it is. Deterministic for a file, so inspection
    and render agree:

    - a RAW header (CR2, IIQ, ORF, RW2, RAF), or no classic TIFF: as sniffed;
    - RAW structure (DNGVersion, sensor data in a directory): RAW, unless
      its sensor data is no larger than an ordinary image in it, LibRaw
      refuses the file and libvips reads it (a TIFF image carrying a stray
      CFA tag): then a TIFF;
    - no RAW structure, but a file that could hide one (it names a maker
      and has no full-size ordinary image, or directories of an unknown
      kind): RAW if LibRaw opens and unpacks it to an image larger than
      the file's largest ordinary directory, else a TIFF;
    - else a TIFF.

    LibRaw unpacks nothing declared over ``limits`` (such a file is RAW and
    refused by its size)."""
    import mmap

    if kind.name not in ("tiff", "raw"):
        return kind
    with open(path, "rb") as f:
        head = f.read(HEADER_WINDOW)
        if raw_magic(head) or head[:4] not in (b"II*\x00", b"MM\x00*"):
            return kind
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            layout = tiff_layout(data)
    if layout.raw:
        if (0 < layout.raw_pixels <= layout.image_pixels and _libraw_size(path, limits) is None
                and _vips_reads(path)):
            return TIFF
        return RAW
    if layout.could_hide_raw:
        size = _libraw_size(path, limits)
        if size is not None and size[0] * size[1] > layout.image_pixels:
            return RAW
    return TIFF


def _libraw_size(path: str, limits: Limits | None) -> tuple[int, int] | None:
    """The size of the image LibRaw makes of ``path`` once it has opened it
    and unpacked its sensor data, or None if it refuses either; a size
    declared over ``limits`` is returned without unpacking."""
    import rawpy

    try:
        with rawpy.imread(path) as raw:
            sizes = raw.sizes
            if limits is None or (
                    sizes.raw_width * sizes.raw_height <= limits.max_image_pixels
                    and (not limits.max_image_side
                         or max(sizes.raw_width, sizes.raw_height) <= limits.max_image_side)):
                raw.unpack()
    except (rawpy.LibRawError, OSError):
        return None
    return sizes.width, sizes.height


def _vips_reads(path: str) -> bool:
    """True if libvips opens ``path`` as an image (its header)."""
    import pyvips

    try:
        pyvips.Image.new_from_file(path, access="sequential")
    except pyvips.Error:
        return False
    return True
