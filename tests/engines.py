"""Engine calls as a test makes them, without a job: a PDF page's raster at
the geometry ingest would give it. Module-level, so a sandboxed worker can
run them."""

from __future__ import annotations

from planzoom.engines import Raster, pdf
from planzoom.v1 import events_pb2, jobs_pb2


def pdf_geometry(path: str, page: int, dpi: float, max_pixels: int
                 ) -> events_pb2.PageGeometry:
    """Page ``page`` of the PDF at ``dpi`` under a cap of ``max_pixels``."""
    return pdf.geometry(path, page, jobs_pb2.JobOptions(dpi=dpi, max_page_pixels=max_pixels))


def render_pdf_page(path: str, page: int, dpi: float, max_pixels: int, out_path: str,
                    band_bytes: int) -> Raster:
    """:func:`planzoom.engines.pdf.rasterize` of the page at
    :func:`pdf_geometry`."""
    return pdf.rasterize(path, pdf_geometry(path, page, dpi, max_pixels), out_path, band_bytes)
