"""The render stage's band-wise PDFium rendering, without the stack."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from planzoom.engines.bands import StripSizer, _rectangle, clip_masks
from tests.dzi_check import psnr, reference_render
from tests.engines import pdf_geometry, render_pdf_page


def test_bands_match_a_whole_page_render(corpus, tmp_path):
    # A1 sheet with /Rotate 90 and a MediaBox centred on the origin.
    for name, page, dpi in [
        ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 2, 60),
        ("arch-floorplan-a1-dense-offsetmediabox-scaledetection-dr.pdf", 1, 50),
        # AutoCAD through macOS Quartz: every object under a clip path.
        ("arch-vvd2-nyboda-A2-autocad2017-quartz10125-pdfium-slow-michelagalassini-strumet.pdf",
         1, 40),
    ]:
        out = tmp_path / f"{page}.raw.zst"
        # 1 MiB bands, PDFium's strips smaller still: many of each per page.
        r = render_pdf_page(str(corpus / name), page, dpi, 10**9, str(out), 1024 * 1024)
        assert pdf_geometry(str(corpus / name), page, dpi, 10**9).dpi == dpi
        raw = zstandard.ZstdDecompressor().stream_reader(out.open("rb")).read()
        got = np.frombuffer(raw, np.uint8).reshape(r.height_px, r.width_px, r.bands)
        ref = reference_render(str(corpus / name), page, dpi)
        if r.bands == 1:  # no colour on the page: every pixel had R = G = B
            assert (ref[:, :, 0] == ref[:, :, 1]).all() and (ref[:, :, 1] == ref[:, :, 2]).all()
            got = np.repeat(got, 3, axis=2)
        assert got.shape == ref.shape
        # PDFium resamples an image that a strip boundary cuts through a little
        # differently from an uncut one (measured: 35.9 dB on page 2 of the
        # crayfishinn set with 1 MiB bands, 57-80 dB elsewhere).
        assert psnr(got, ref) >= 35


def test_pixel_cap_lowers_dpi(corpus, tmp_path):
    name = "arch-houseplan-hugepage-607x682in-solvespace-master1.pdf"
    r = render_pdf_page(str(corpus / name), 1, 300, 4_000_000, str(tmp_path / "p.zst"), 1 << 20)
    geometry = pdf_geometry(str(corpus / name), 1, 300, 4_000_000)
    assert geometry.dpi < 300 and r.width_px * r.height_px <= 4_000_000
    assert (r.width_px, r.height_px) == (geometry.width_px, geometry.height_px)
    assert geometry.width_pt > 43000  # the page is 607 in wide


def test_line_art_is_grey_and_colour_stays_colour(corpus, tmp_path):
    # The ArchiCAD facades are grey line art and hatching; the AutoCAD site
    # plan has coloured layers.
    for name, bands in [("arch-facades-58x30cm-archicad-atriumhouse.pdf", 1),
                        ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 3)]:
        r = render_pdf_page(str(corpus / name), 1, 30, 10**9, str(tmp_path / "p.zst"), 1 << 20)
        ref = reference_render(str(corpus / name), 1, 30)
        is_grey = bool((ref[:, :, 0] == ref[:, :, 1]).all()
                       and (ref[:, :, 1] == ref[:, :, 2]).all())
        assert r.bands == bands == (1 if is_grey else 3), name
        raw = zstandard.ZstdDecompressor().stream_reader((tmp_path / "p.zst").open("rb")).read()
        assert len(raw) == r.width_px * r.height_px * r.bands
        assert not (tmp_path / "p.zst.grey").exists()


@pytest.mark.parametrize("name, small", [
    ("arch-vvd2-nyboda-A2-autocad2017-quartz10125-pdfium-slow-michelagalassini-strumet.pdf", True),
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", False),
])
def test_strips_follow_the_pages_clip_paths_and_every_row_is_drawn_once(
        corpus, tmp_path, monkeypatch, name, small):
    # A Quartz sheet (every object clipped by a page-sized path PDFium
    # cannot take for a rectangle) gets small strips; a sheet of images big
    # ones. The choice is read from the page, not timed, so a page renders
    # to the same pixels however busy the machine is: no row is drawn twice.
    import pypdfium2.raw as pdfium_c

    calls = []
    real = pdfium_c.FPDFBitmap_CreateEx

    def create(width, height, *args):
        calls.append((width, height))
        return real(width, height, *args)

    monkeypatch.setattr(pdfium_c, "FPDFBitmap_CreateEx", create)
    r = render_pdf_page(str(corpus / name), 2 if not small else 1, 150, 10**9,
                        str(tmp_path / "p.raw.zst"), 256 << 20)
    sizer = StripSizer(r.width_px, small=small)
    assert all(w == r.width_px for w, _ in calls)
    assert sum(h for _, h in calls) == r.height_px  # one band, each row once
    assert {h for _, h in calls[:-1]} == {sizer.rows}
    again = render_pdf_page(str(corpus / name), 2 if not small else 1, 150, 10**9,
                            str(tmp_path / "q.raw.zst"), 256 << 20)
    assert again.digest == r.digest
    if not small:  # a band under two big strips is one call: no image is cut
        calls.clear()
        low = render_pdf_page(str(corpus / name), 2, 60, 10**9, str(tmp_path / "s.raw.zst"),
                              256 << 20)
        assert [h for _, h in calls] == [low.height_px]


def test_clip_masks_counts_page_sized_clips_that_are_not_rectangles(corpus):
    import pypdfium2 as pdfium

    quartz = pdfium.PdfDocument(str(
        corpus / "arch-vvd1-studio-A1-autocad2017-quartz-pdfium-slow-michelagalassini-strumet.pdf"))
    assert clip_masks(quartz[0]) > 1000  # every one of its 6,128 objects
    sheet = pdfium.PdfDocument(str(corpus / "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"))
    assert clip_masks(sheet[1]) == 0  # small non-rectangular clips: no page-sized mask
    assert _rectangle([(0, 0), (10, 0), (10, 5), (0, 5), (0, 0)])
    assert not _rectangle([(0.02, 0), (10, 0), (10, 5), (0, 5), (0.02, 0)])
    assert StripSizer(10_000).rows > StripSizer(10_000, small=True).rows >= 1
    assert StripSizer(10**7, small=True).small_rows == 1  # a very wide page: one row at a time
