"""Checks of a DZI pyramid in S3 against the DZI format and an independent
render of the page (used by the end-to-end tests)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pypdfium2 as pdfium
import pyvips

from planzoom.dzi import DziInfo, parse_dzi
from planzoom.v1 import jobs_pb2
from tests.helpers import list_keys


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def reference_render(pdf_path: str, page: int, dpi: float) -> np.ndarray:
    """The page rendered whole by pypdfium2 at ``dpi``, RGB, H x W x 3."""
    doc = pdfium.PdfDocument(pdf_path)
    try:
        return doc[page - 1].render(scale=dpi / 72, rev_byteorder=True).to_numpy()
    finally:
        doc.close()


def render_at(pdf_path: str, page: int, width: int, height: int) -> np.ndarray:
    """The page drawn whole by PDFium at exactly ``width x height`` pixels
    (annotations on, as the render stage draws), RGB, H x W x 3."""
    import pypdfium2.raw as c

    doc = pdfium.PdfDocument(pdf_path)
    try:
        bitmap = pdfium.PdfBitmap.new_native(width, height, c.FPDFBitmap_BGR, rev_byteorder=True)
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
        c.FPDF_RenderPageBitmap(bitmap, doc[page - 1], 0, 0, width, height, 0,
                                c.FPDF_ANNOT | c.FPDF_REVERSE_BYTE_ORDER)
        rows = np.frombuffer(bitmap.buffer, np.uint8).reshape(height, bitmap.stride)
        return rows[:, : width * 3].reshape(height, width, 3).copy()
    finally:
        doc.close()


def decode(data: bytes) -> np.ndarray:
    im = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                      shape=(im.height, im.width, im.bands))


def check_page(s3, record: jobs_pb2.PageRecord, pdf_path: str | None, compare: bool = True,
               reference: np.ndarray | None = None, min_psnr: float = 35.0) -> DziInfo:
    """Assert everything the DZI format and the job record promise for one
    page (its overview, if it has one, too); return the descriptor. The
    full-resolution level is compared with ``reference`` (H x W x 3, or
    H x W for grey) or, by default, a render of page ``record.page`` of
    ``pdf_path``; ``compare=False`` skips that."""
    dzi = parse_dzi(s3.get_object(Bucket="planzoom", Key=record.dzi_key)["Body"].read())
    if pdf_path is not None:
        scale = record.dpi / 72
        expected = (math.ceil(record.width_pt * scale), math.ceil(record.height_pt * scale))
        assert (dzi.width, dzi.height) == expected, (
            f"{record.dzi_key}: DZI is {dzi.width}x{dzi.height} px, the page at {record.dpi} "
            f"DPI is {expected[0]}x{expected[1]} px")
    assert (dzi.width, dzi.height) == (record.width_px, record.height_px)
    assert (dzi.tile_size, dzi.overlap, dzi.format) == (record.tile_size, record.overlap, "jpg")
    levels = math.ceil(math.log2(max(dzi.width, dzi.height))) + 1
    assert dzi.levels == levels == record.levels

    files_prefix = record.dzi_key[: -len(".dzi")] + "_files/"
    found: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for key in list_keys(s3, files_prefix):
        level, name = key[len(files_prefix):].split("/")
        col, row = name.removesuffix(".jpg").split("_")
        found[int(level)].add((int(col), int(row)))
    assert sorted(found) == list(range(levels)), "a level is missing"
    for level in range(levels):
        cols, rows = dzi.grid(level)
        assert found[level] == {(c, r) for c in range(cols) for r in range(rows)}, (
            f"level {level} tile grid incomplete")
    assert sum(len(v) for v in found.values()) == record.tile_count == dzi.tile_count()
    overview = next((v for v in record.variants if v.name == "overview"), None)
    if overview is not None:  # a level of this pyramid, drawn by PDFium at its size
        assert (overview.width, overview.height) == dzi.level_size(overview.level)
        image = decode(s3.get_object(Bucket="planzoom", Key=overview.key)["Body"].read())
        assert image.shape == (overview.height, overview.width, 3)
        if pdf_path is not None and compare:
            quality = psnr(image, render_at(pdf_path, record.page, overview.width,
                                            overview.height))
            assert quality >= min_psnr, f"page {record.page} overview: PSNR {quality:.1f} dB"

    if not compare:
        return dzi
    # Full-resolution level: every tile's size, then the reassembled raster.
    top = levels - 1
    canvas = np.zeros((dzi.height, dzi.width, 3), np.uint8)
    cols, rows = dzi.grid(top)
    for c in range(cols):
        for r in range(rows):
            tile = decode(s3.get_object(Bucket="planzoom",
                                        Key=f"{files_prefix}{top}/{c}_{r}.jpg")["Body"].read())
            x, y, w, h = dzi.tile_box(top, c, r)
            assert tile.shape[:2] == (h, w), f"tile {top}/{c}_{r}: {tile.shape[:2]} != {(h, w)}"
            assert w <= dzi.tile_size + 2 * dzi.overlap and h <= dzi.tile_size + 2 * dzi.overlap
            ox, oy = c * dzi.tile_size - x, r * dzi.tile_size - y  # skip the overlap
            cw = min(dzi.tile_size, dzi.width - c * dzi.tile_size)
            ch = min(dzi.tile_size, dzi.height - r * dzi.tile_size)
            y0, x0 = r * dzi.tile_size, c * dzi.tile_size
            part = tile[oy : oy + ch, ox : ox + cw]
            assert part.shape[2] == (1 if record.bands == 1 else 3), "tile bands"
            canvas[y0 : y0 + ch, x0 : x0 + cw] = part[:, :, :3]  # grey broadcasts
    if reference is None:
        reference = reference_render(pdf_path, record.page, record.dpi)
    if reference.ndim == 2:
        reference = np.repeat(reference[:, :, None], 3, axis=2)
    assert reference.shape == canvas.shape, (reference.shape, canvas.shape)
    quality = psnr(canvas, reference)
    assert quality >= min_psnr, f"page {record.page}: PSNR {quality:.1f} dB against the reference"
    return dzi
