"""planzoom's native engines: every library that parses untrusted bytes or
turns pixels into files, each behind a small interface, in one wing.

=================  ===========================================  ================================
module             engine                                       takes → gives
=================  ===========================================  ================================
``pdf``            PDFium (pypdfium2)                           a PDF → its pages' sizes; a
                                                                page's raster; overviews and
                                                                thumbnails of a run of pages
``image``          libvips, LibRaw (rawpy), libheif             a photo, scan or RAW → its pages
                   (pillow-heif)                                from the headers; a page's
                                                                raster; its variants
``video``          FFmpeg's libraries (PyAV)                    a video → what it holds; an HLS
                                                                ladder, poster and thumbnail
``text``           PDFium's text layer (pypdfium2)              a page → its words with boxes
``sheets``         (pure Python)                                a page's words → its sheet
                                                                candidates; a set's → its sheets
``pyramid``        OpenCV, libjpeg-turbo (simplejpeg)           raster rows → DZI tiles, streamed
``raster``         zstd                                         the raw raster render hands tile
``variants``       libvips                                      how a variant file is sized, saved
``sandbox``        worker processes                             any engine call, isolated
=================  ===========================================  ================================

The source engines (pdf, image, video) run only inside the sandbox
(:mod:`planzoom.engines.sandbox`): a service calls them as
``await pool.run(seconds, engines.inspect, path, kind.name, limits)``, never
in its own process. This module is their one entry for services: each
function below picks the engine for a kind of source (:mod:`planzoom.media`)
and is what gets sent to a worker. A service is plumbing around these calls
(queues, storage, reports); what a PDFium, libvips or FFmpeg call does lives
here. The pyramid runs in the tile service's own process (it reads only
planzoom's own rasters).

Each source engine module gives the functions of :class:`SourceEngine`, the
still ones (pdf, image) those of :class:`PageEngine` too; their errors are
:class:`~planzoom.errors.PlanzoomError` subclasses with a reason from the
catalogue (docs/reasons.md), which cross the sandbox intact.
"""

from __future__ import annotations

from typing import Protocol

from planzoom.engines import image, pdf, video
from planzoom.engines.base import Limits, SourceInfo, TooManyPages
from planzoom.engines.raster import Raster
from planzoom.media import KINDS, Kind
from planzoom.pages import MAX_SIDE_PIXELS, image_geometry, page_geometry
from planzoom.v1 import events_pb2, jobs_pb2

__all__ = ["Limits", "PageEngine", "Raster", "SourceEngine", "SourceInfo", "TooManyPages",
           "geometries", "inspect", "page_variants", "previews", "rasterize"]


class SourceEngine(Protocol):
    """Opens a source: ``inspect(path, kind, limits) -> SourceInfo`` reads
    its pages (sizes in points, an image's pixels and DPI, a video's frame
    and duration) from its structure without decoding pixels, and refuses
    (raises) a damaged, encrypted or over-the-limits one."""

    def inspect(self, path: str, kind: Kind, limits: Limits) -> SourceInfo: ...


class PageEngine(SourceEngine, Protocol):
    """Draws a still page (of a PDF or an image) at the size its
    ``PageGeometry`` says (pixels, DPI: worked out at ingest):

    - ``rasterize(path, kind, geometry, out_path, band_bytes, text) -> Raster``
      writes the full-resolution raster (:mod:`planzoom.engines.raster`),
      holding at most ``band_bytes`` of pixels at once, and with ``text``
      the page's words and sheet candidates beside it where the page has a
      text layer (:mod:`planzoom.engines.text`, a PDF's);
    - ``variants(path, kind, geometry, options, watermark, out_dir) ->
      [variant file]`` writes the images made beside the page's pyramid
      (:mod:`planzoom.engines.variants`): a PDF page's overview and
      thumbnail, an image page's thumbnail, icon, WebP sizes and display.
    """

    def rasterize(self, path: str, kind: Kind, geometry: events_pb2.PageGeometry,
                  out_path: str, band_bytes: int, text: bool = False) -> Raster: ...

    def variants(self, path: str, kind: Kind, geometry: events_pb2.PageGeometry,
                 options: jobs_pb2.JobOptions, watermark: str, out_dir: str) -> list[dict]: ...


class _Pdf:
    """The PDF engine's functions in the shape of :class:`PageEngine`."""

    @staticmethod
    def inspect(path: str, kind: Kind, limits: Limits) -> SourceInfo:
        return pdf.inspect(path, limits)

    @staticmethod
    def rasterize(path: str, kind: Kind, geometry: events_pb2.PageGeometry, out_path: str,
                  band_bytes: int, text: bool = False) -> Raster:
        return pdf.rasterize(path, geometry, out_path, band_bytes, text)

    @staticmethod
    def variants(path: str, kind: Kind, geometry: events_pb2.PageGeometry,
                 options: jobs_pb2.JobOptions, watermark: str, out_dir: str) -> list[dict]:
        made = pdf.previews(path, [geometry], options, out_dir)[0]
        return made.get("variants", [])  # an error: the page's render just met none


class _Image:
    """The image engine's functions in the shape of :class:`PageEngine`."""

    inspect = staticmethod(image.inspect)

    @staticmethod
    def rasterize(path: str, kind: Kind, geometry: events_pb2.PageGeometry, out_path: str,
                  band_bytes: int, text: bool = False) -> Raster:
        return image.rasterize(path, kind, geometry, out_path, band_bytes)

    @staticmethod
    def variants(path: str, kind: Kind, geometry: events_pb2.PageGeometry,
                 options: jobs_pb2.JobOptions, watermark: str, out_dir: str) -> list[dict]:
        return image.variants(path, kind, geometry, options.variants, watermark, out_dir)


class _Video:
    """The video engine's functions in the shape of :class:`SourceEngine`."""

    @staticmethod
    def inspect(path: str, kind: Kind, limits: Limits) -> SourceInfo:
        return video.inspect(path, limits)


def engine_for(kind: Kind) -> SourceEngine:
    """The engine that opens sources of ``kind``."""
    if kind.is_pdf:
        return _Pdf
    if kind.is_video:
        return _Video
    return _Image


def _page_engine(kind_name: str) -> tuple[PageEngine, Kind]:
    kind = KINDS[kind_name or "pdf"]
    engine = engine_for(kind)
    if not hasattr(engine, "rasterize"):
        raise ValueError(f"{kind.name} sources have no still pages")
    return engine, kind


# -- what services send to the sandbox -----------------------------------------

def inspect(path: str, kind_name: str, limits: Limits) -> SourceInfo:
    """Open the source at ``path`` of kind ``kind_name`` (:data:`planzoom.media.KINDS`)
    with its engine (:class:`SourceEngine`)."""
    kind = KINDS[kind_name]
    return engine_for(kind).inspect(path, kind, limits)


def rasterize(path: str, kind_name: str, geometry: events_pb2.PageGeometry, out_path: str,
              band_bytes: int, text: bool = False) -> Raster:
    """Write the raster of a still page, and with ``text`` its words and
    sheet candidates beside it (:class:`PageEngine`)."""
    engine, kind = _page_engine(kind_name)
    return engine.rasterize(path, kind, geometry, out_path, band_bytes, text)


def page_variants(path: str, kind_name: str, geometry: events_pb2.PageGeometry,
                  options: jobs_pb2.JobOptions, watermark: str, out_dir: str) -> list[dict]:
    """Write a still page's variant files (:class:`PageEngine`)."""
    engine, kind = _page_engine(kind_name)
    return engine.variants(path, kind, geometry, options, watermark, out_dir)


def previews(path: str, pages: list[events_pb2.PageGeometry], options: jobs_pb2.JobOptions,
             out_dir: str) -> list[dict]:
    """A PDF's preview pass: the overview and thumbnail of each of ``pages``
    in one call (:func:`planzoom.engines.pdf.previews`)."""
    return pdf.previews(path, pages, options, out_dir)


def geometries(info: SourceInfo, options: jobs_pb2.JobOptions,
               max_side: int = MAX_SIDE_PIXELS) -> list[events_pb2.PageGeometry]:
    """Each page's geometry from what :func:`inspect` found (ingest works it
    out once for the whole job, :mod:`planzoom.pages`): a PDF page at the
    job's DPI under the caps, an image page (or a video's frame) at its own
    pixels and resolution."""
    if info.pixel_sizes:
        return [image_geometry(n, w, h, dpi, index) for n, ((w, h), dpi, index) in
                enumerate(zip(info.pixel_sizes, info.dpis, info.indexes, strict=True), start=1)]
    return [page_geometry(n, w, h, options, max_side)
            for n, (w, h) in enumerate(info.page_sizes, start=1)]
