"""The images made beside a page's pyramid (worker functions, like
:mod:`services.render.rasterize`): for an image page a thumbnail, a square
icon, WebP previews and a watermarked display image; for a PDF page its
thumbnail, which the viewer's page strip shows, and its overview, a low
level of its pyramid that the viewer shows until the page is DONE.

An image page's variants come from one reduced decode of the source (libvips
``thumbnail``: JPEG and WebP shrink on load, a TIFF page or PNG is read once)
at the largest size any variant needs, normalised as the pyramid's raster
(upright, sRGB, 8-bit, on white); every variant is cut from that one image,
never by reading the source again. Sizes are the longest side in pixels and
never exceed the source's (no upscaling); files carry no metadata.
"""

from __future__ import annotations

import html
import os

from planzoom.dzi import level_count, level_size
from planzoom.images import decoded, image_pages, normalised
from planzoom.media import KINDS
from planzoom.pages import effective_dpi, raster_size
from planzoom.v1 import jobs_pb2


def _save(image, out_dir: str, name: str, fmt: str, quality: int, prefix: str = "") -> dict:
    path = os.path.join(out_dir, f"{prefix}{name}.{fmt}")
    if fmt == "webp":
        image.webpsave(path, Q=quality, keep="none")
    else:
        image.jpegsave(path, Q=quality, keep="none", optimize_coding=True)
    return {"name": name, "format": fmt, "width": image.width, "height": image.height,
            "path": path, "bytes": os.path.getsize(path)}


def _fit(image, px: int):
    """``image`` with its longest side at most ``px`` (never enlarged)."""
    return image.thumbnail_image(px, height=px, size="down")


def watermarked(image, text: str, position: str, opacity: float):
    """``image`` with ``text`` in white over a soft dark shadow (legible on
    paper and on sky), its height a twentieth of the shorter side, at
    ``position`` with a margin, blended at ``opacity``."""
    import pyvips

    if not text or opacity <= 0:
        return image
    height = max(10, min(image.width, image.height) // 20)
    mask = pyvips.Image.text(html.escape(text, quote=False), font="sans bold",
                             dpi=max(20, height * 72 // 12), width=max(1, image.width * 9 // 10))
    margin = height // 2
    if mask.width + 2 * margin > image.width or mask.height + 2 * margin > image.height:
        return image  # too small to carry it legibly
    x = {"left": margin, "right": image.width - mask.width - margin}.get(
        position.split("-")[-1], (image.width - mask.width) // 2)
    y = {"top": margin, "bottom": image.height - mask.height - margin}.get(
        position.split("-")[0], (image.height - mask.height) // 2)
    mask = mask.embed(x, y, image.width, image.height)
    shadow = mask.gaussblur(max(1.0, height / 12)) * (opacity / 255)
    text_alpha = mask * (opacity / 255)
    out = image * (1 - shadow)
    out = out * (1 - text_alpha) + text_alpha * 255
    return out.cast("uchar")


def image_variants(path: str, kind_name: str, index: int, opts: jobs_pb2.VariantOptions,
                   watermark: str, max_pages: int, max_pixels: int, out_dir: str) -> list[dict]:
    """Write the variants ``opts`` asks for of directory ``index`` of an
    image file into ``out_dir``; returns ``[{name, format, width, height,
    path, bytes}]``. Raises ImageDamaged and ImageTooLarge as the raster's
    decode does."""
    import pyvips

    sizes = [opts.thumbnail_px, opts.icon_px, opts.display_px, *opts.webp_px]
    largest = max(sizes, default=0)
    if not largest:
        return []
    kind = KINDS[kind_name]
    page = next(p for p in image_pages(path, kind, max_pages, max_pixels) if p.index == index)
    if kind.is_raw or kind.name == "heif":
        base = _fit(decoded(path, kind, page), largest)  # no reduced decode for these
    else:
        source = f"{path}[page={index}]" if kind.name == "tiff" else path
        base = normalised(pyvips.Image.thumbnail(source, largest, height=largest, size="down"))
    base = base.copy_memory()
    made = []
    if opts.thumbnail_px:
        made.append(_save(_fit(base, opts.thumbnail_px), out_dir, "thumbnail", "jpg",
                          opts.thumbnail_quality or opts.jpeg_quality))
    if opts.icon_px:
        side = min(opts.icon_px, base.width, base.height)
        icon = base.thumbnail_image(side, height=side, crop="centre", size="down")
        made.append(_save(icon, out_dir, "icon", "jpg", opts.icon_quality or opts.jpeg_quality))
    for px in opts.webp_px:
        made.append(_save(_fit(base, px), out_dir, f"webp-{px}", "webp", opts.webp_quality))
    if opts.display_px:
        display = watermarked(_fit(base, opts.display_px), watermark,
                              opts.watermark_position, opts.watermark_opacity)
        made.append(_save(display, out_dir, "display", "jpg",
                          opts.display_quality or opts.jpeg_quality))
    return made


def overview_level(width_px: int, height_px: int, px: int) -> int:
    """The highest level of a ``width_px x height_px`` DZI pyramid whose
    longest side is at most ``px`` pixels (level 0, one pixel, if none)."""
    levels = level_count(width_px, height_px)
    return max((level for level in range(levels)
                if max(level_size(width_px, height_px, level)) <= px), default=0)


def pdf_previews(pdf_path: str, first: int, last: int, options: jobs_pb2.JobOptions,
                 max_side: int, out_dir: str) -> list[dict]:
    """The overview and the thumbnail of pages ``first`` .. ``last``
    (1-based) of a PDF, rendered by PDFium, written into ``out_dir``.

    The overview is level :func:`overview_level` (``variants.overview_px``)
    of the pyramid the page will have at ``options.dpi`` (after the pixel
    caps, as :func:`~services.render.rasterize.render_page` sizes it),
    rendered at exactly that level's size and saved at the tiles' JPEG
    quality; the thumbnail (``variants.thumbnail_px``, longest side) is cut
    from it, or rendered on its own if it is the larger. Returns one dict
    per page: ``{page, width_pt, height_pt, variants: [{name, format,
    width, height, path, bytes, level}]}``, or ``{page, error}`` for a page
    PDFium cannot render (its page job will report why)."""
    import pypdfium2 as pdfium

    from services.render.rasterize import _document

    opts, made = options.variants, []
    doc = _document(pdf_path)
    for number in range(first, last + 1):
        try:
            page = doc[number - 1]
        except (pdfium.PdfiumError, IndexError) as e:
            made.append({"page": number, "error": f"PDFium could not load the page: {e}"})
            continue
        try:
            width_pt, height_pt = page.get_size()
            variants = []
            base = None  # the largest image drawn so far
            if opts.overview_px:
                dpi = effective_dpi(width_pt, height_pt, options.dpi, options.max_page_pixels,
                                    max_side)
                full = raster_size(width_pt, height_pt, dpi)
                level = overview_level(*full, opts.overview_px)
                base = _rendered(page, *level_size(*full, level))
                variants.append({**_save(base, out_dir, "overview", "jpg",
                                         options.jpeg_quality, f"{number}."), "level": level})
            if opts.thumbnail_px:
                if base is None or max(base.width, base.height) < opts.thumbnail_px:
                    scale = opts.thumbnail_px / max(width_pt, height_pt)
                    base = _rendered(page, max(1, round(width_pt * scale)),
                                     max(1, round(height_pt * scale)))
                variants.append(_save(_fit(base, opts.thumbnail_px), out_dir, "thumbnail",
                                      "jpg", opts.thumbnail_quality, f"{number}."))
        except Exception as e:  # noqa: BLE001 - the page job will meet it and say why
            made.append({"page": number, "error": f"{type(e).__name__}: {e}"})
            continue
        finally:
            page.close()
        made.append({"page": number, "width_pt": float(width_pt), "height_pt": float(height_pt),
                     "variants": variants})
    return made


def _rendered(page, width: int, height: int):
    """``page`` (pypdfium2) drawn by PDFium at ``width x height`` pixels, as
    a libvips RGB image over a numpy array (which it keeps alive: images
    made from it must not outlive it)."""
    import numpy as np
    import pyvips

    from services.render.rasterize import render_rows

    pixels = np.empty((height, width, 3), np.uint8)
    render_rows(page, pixels, 0, height)
    return pyvips.Image.new_from_memory(pixels.data, width, height, 3, "uchar")
