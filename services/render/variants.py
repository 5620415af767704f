"""The images made beside a page's pyramid (worker functions, like
:mod:`services.render.rasterize`): for an image page a thumbnail, a square
icon, WebP previews and a watermarked display image; for a PDF page its
thumbnail, which the viewer's page strip shows.

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

from planzoom.images import decoded, image_pages, normalised
from planzoom.media import KINDS
from planzoom.v1 import jobs_pb2


def _save(image, out_dir: str, name: str, fmt: str, quality: int) -> dict:
    path = os.path.join(out_dir, f"{name}.{fmt}")
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


def pdf_thumbnail(pdf_path: str, page_number: int, px: int, quality: int,
                  out_dir: str) -> list[dict]:
    """Write page ``page_number`` of a PDF, rendered by PDFium with its
    longest side ``px`` pixels, as ``thumbnail.jpg`` in ``out_dir``; returns
    ``[{name, ...}]`` as :func:`image_variants` (empty if ``px`` is 0)."""
    import numpy as np
    import pyvips

    from services.render.rasterize import _document

    if not px:
        return []
    page = _document(pdf_path)[page_number - 1]
    try:
        width, height = page.get_size()
        bitmap = page.render(scale=px / max(width, height), rev_byteorder=True,
                             may_draw_forms=True)
        pixels = np.ascontiguousarray(bitmap.to_numpy()[:, :, :3])
    finally:
        page.close()
    image = pyvips.Image.new_from_memory(pixels.data, pixels.shape[1], pixels.shape[0], 3,
                                         "uchar")
    return [_save(_fit(image, px), out_dir, "thumbnail", "jpg", quality)]
