"""The render stage's band-wise PDFium rendering, without the stack."""

from __future__ import annotations

import numpy as np
import zstandard

from services.render.rasterize import render_page
from tests.dzi_check import psnr, reference_render


def test_bands_match_a_whole_page_render(corpus, tmp_path):
    # A1 sheet with /Rotate 90 and a MediaBox centred on the origin.
    for name, page, dpi in [
        ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 2, 60),
        ("arch-floorplan-a1-dense-offsetmediabox-scaledetection-dr.pdf", 1, 50),
    ]:
        out = tmp_path / f"{page}.raw.zst"
        # 1 MiB bands: many bands per page.
        r = render_page(str(corpus / name), page, dpi, 10**9, str(out), 1024 * 1024)
        assert r.dpi == dpi and r.bands == 3
        raw = zstandard.ZstdDecompressor().stream_reader(out.open("rb")).read()
        got = np.frombuffer(raw, np.uint8).reshape(r.height_px, r.width_px, 3)
        ref = reference_render(str(corpus / name), page, dpi)
        assert got.shape == ref.shape
        # PDFium resamples an image that a band boundary cuts through a little
        # differently from an uncut one (measured: 35.9 dB on page 2 of the
        # crayfishinn set with 1 MiB bands, 57-80 dB elsewhere).
        assert psnr(got, ref) >= 35


def test_pixel_cap_lowers_dpi(corpus, tmp_path):
    name = "arch-houseplan-hugepage-607x682in-solvespace-master1.pdf"
    r = render_page(str(corpus / name), 1, 300, 4_000_000, str(tmp_path / "p.zst"), 1 << 20)
    assert r.dpi < 300 and r.width_px * r.height_px <= 4_000_000
    assert r.width_pt > 43000  # the page is 607 in wide
