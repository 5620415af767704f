"""Variant files, the images made beside a page's pyramid (thumbnail, icon,
WebP previews, a watermarked display image, a PDF page's overview), with
libvips: how each is sized and saved, whatever engine drew its pixels.

A variant file is described by a dict ``{name, format, width, height,
path, bytes}`` (and ``level`` for an overview): the engines return them
from the sandbox as JSON, the render service stores and reports them.
Sizes are the longest side in pixels and never exceed the source's (no
upscaling); files carry no metadata (``keep="none"``).
"""

from __future__ import annotations

import html
import os

from planzoom.dzi import level_count, level_size


def save(image, out_dir: str, name: str, fmt: str, quality: int, prefix: str = "") -> dict:
    """Save ``image`` (pyvips) as variant ``name`` in ``fmt`` (jpg or webp)
    at ``quality`` into ``out_dir`` (file ``<prefix><name>.<fmt>``); its
    description as in the module docstring."""
    path = os.path.join(out_dir, f"{prefix}{name}.{fmt}")
    if fmt == "webp":
        image.webpsave(path, Q=quality, keep="none")
    else:
        image.jpegsave(path, Q=quality, keep="none", optimize_coding=True)
    return {"name": name, "format": fmt, "width": image.width, "height": image.height,
            "path": path, "bytes": os.path.getsize(path)}


def fit(image, px: int):
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


def overview_level(width_px: int, height_px: int, px: int) -> int:
    """The highest level of a ``width_px x height_px`` DZI pyramid whose
    longest side is at most ``px`` pixels (level 0, one pixel, if none)."""
    levels = level_count(width_px, height_px)
    return max((level for level in range(levels)
                if max(level_size(width_px, height_px, level)) <= px), default=0)
