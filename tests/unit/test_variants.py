"""Variant options and the watermark, without a stack."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from planzoom.engines.variants import watermarked
from planzoom.errors import InvalidInput
from planzoom.options import resolve_variants
from planzoom.v1 import jobs_pb2


def test_defaults_are_the_seed_sizes():
    v = resolve_variants(jobs_pb2.VariantOptions())
    assert (v.thumbnail_px, v.icon_px, list(v.webp_px), v.display_px) == (300, 128,
                                                                          [400, 800, 1920], 1920)
    assert (v.watermark_position, v.watermark_opacity) == ("bottom-right", pytest.approx(0.35))
    assert (v.jpeg_quality, v.webp_quality, v.thumbnail_quality, v.display_quality) == \
        (85, 80, 85, 85)


def test_each_variant_can_be_turned_off_or_tuned():
    v = resolve_variants(jobs_pb2.VariantOptions(thumbnail_px=0, webp_px=[0], icon_quality=60,
                                                 watermark_opacity=0))
    assert v.thumbnail_px == 0 and list(v.webp_px) == [] and v.icon_quality == 60
    assert v.watermark_opacity == 0 and v.icon_px == 128


@pytest.mark.parametrize("bad", [
    jobs_pb2.VariantOptions(display_px=5000), jobs_pb2.VariantOptions(webp_px=[1, 2, 3, 4, 5, 6]),
    jobs_pb2.VariantOptions(watermark_position="middle"),
    jobs_pb2.VariantOptions(watermark_opacity=1.5), jobs_pb2.VariantOptions(webp_quality=101),
    jobs_pb2.VariantOptions(display_quality=500), jobs_pb2.VariantOptions(watermark_text="x" * 201),
])
def test_out_of_range_variant_options_are_refused(bad):
    with pytest.raises(InvalidInput) as refused:
        resolve_variants(bad)
    assert refused.value.field.startswith("options.variants.")


CORNERS = {"bottom-right": (slice(-60, None), slice(-400, None)),
           "top-left": (slice(0, 60), slice(0, 400))}


@pytest.mark.parametrize("position,other", [("bottom-right", "top-left"),
                                            ("top-left", "bottom-right")])
def test_the_watermark_lands_where_asked(position, other):
    grey = (pyvips.Image.black(1200, 800, bands=3) + 128).cast("uchar")
    marked = watermarked(grey, "acme · tower/A-101 <&>", position, 0.5)
    diff = np.abs(np.ndarray(buffer=marked.write_to_memory(), dtype=np.uint8,
                             shape=(800, 1200, 3)).astype(int) - 128)
    assert diff[CORNERS[position]].mean() > 3, "no watermark where it was asked for"
    assert diff[CORNERS[other]].max() == 0 and diff[300:500, 400:800].max() == 0
    assert watermarked(grey, "", position, 0.5).avg() == 128
