"""The plan viewer in a real browser (Debian's chromium driven by
Playwright) against the running stack: every page's thumbnail and overview
come first and pages are done one by one while the job runs,
the last page's deep zoom loads without one failed request, what it shows
at 1:1 is what PDFium draws, and the keyboard moves between pages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import pyvips

from planzoom.v1 import jobs_pb2
from tests.dzi_check import psnr
from tests.helpers import wait_ended

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="viewer", plan="crayfishinn")
DPI = 120
VIEW = (1000, 700)  # CSS pixels of the browser window, device scale factor 1
#: What the browser shows at 1:1 (JPEG tiles at quality 90, drawn by
#: OpenSeadragon) against PDFium's own raster of the same region: 40.5 dB
#: measured on this sheet, the loss being JPEG's around fine lines. The same
#: region one pixel off measures 19 dB, a wrong page or level lower still;
#: 30 dB lies well between, with room for JPEG on denser line work.
MIN_PSNR_DB = 30.0


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: make test installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def pdfium_region(pdf: Path, page: int, width_px: int, height_px: int, x0: int, y0: int,
                  w: int, h: int) -> np.ndarray:
    """Pixels (x0, y0)-(x0+w, y0+h) of the page rendered at width_px x
    height_px, as the render stage draws it (annotations on)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    doc = pdfium.PdfDocument(str(pdf))
    bitmap = pdfium.PdfBitmap.new_native(w, h, c.FPDFBitmap_BGR, rev_byteorder=True)
    bitmap.fill_rect((255, 255, 255, 255), 0, 0, w, h)
    c.FPDF_RenderPageBitmap(bitmap, doc[page - 1], -x0, -y0, width_px, height_px, 0,
                            c.FPDF_ANNOT | c.FPDF_REVERSE_BYTE_ORDER)
    rows = np.frombuffer(bitmap.buffer, np.uint8).reshape(h, bitmap.stride)
    return rows[:, : w * 3].reshape(h, w, 3).copy()


def test_viewer_follows_a_job_and_shows_what_pdfium_draws(stack, browser, corpus, client):
    context = browser.new_context(viewport={"width": VIEW[0], "height": VIEW[1]},
                                  device_scale_factor=1)
    page = context.new_page()
    failures: list[str] = []
    # Chromium reports a response body read to its end through a stream
    # (the viewer's Server-Sent Events) as ERR_ABORTED: that one request is
    # judged by its status alone.
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}")
            if "/events" not in r.url else None)
    page.on("response", lambda r: failures.append(f"{r.url}: {r.status}")
            if r.status >= 400 else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    submitted = time.monotonic()
    resp = client.submit(str(corpus / SET), PLAN, jobs_pb2.JobOptions(dpi=DPI))
    token = stack.token("acme", "viewer")
    page.goto(f"{stack.gateway_url}/view/{resp.job_id}#token={token}")
    assert "token=" not in page.url  # taken out of the address bar

    # Every page's thumbnail comes first (its preview pass), then pages are
    # done one by one; the last page shows its overview, then its deep zoom.
    seen, first_visible, all_thumbnails, shown = [], None, None, set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        thumbnails = page.evaluate("document.querySelectorAll('.page img').length")
        done = page.evaluate("document.querySelectorAll('.page[data-state=done]').length")
        if thumbnails and first_visible is None:
            page.wait_for_function("() => planzoom.viewer.world.getItemCount() > 0 && "
                                   "planzoom.viewer.world.getItemAt(0).getFullyLoaded()")
            first_visible = time.monotonic() - submitted
        if thumbnails == 8 and all_thumbnails is None:
            all_thumbnails = (time.monotonic() - submitted, done)
            page.keyboard.press("End")
        shown.add(page.evaluate("planzoom.shown"))
        if not seen or seen[-1] != done:
            seen.append(done)
        if done == 8 and "complete" in page.inner_text("#state"):
            break
        time.sleep(0.1)
    assert seen[-1] == 8, seen
    assert len(set(seen)) >= 3, f"pages were not done one by one: {seen}"
    assert seen == sorted(seen)
    assert all_thumbnails[1] < 8, f"thumbnails came only with the pages: {all_thumbnails}"
    page.wait_for_function("() => planzoom.shown === '8:dzi'")
    assert "8:overview" in shown, f"page 8 was never shown as its overview: {shown}"
    print(f"\nsubmit → first page visible in the browser: {first_visible:.1f} s; every "
          f"thumbnail: {all_thumbnails[0]:.1f} s ({all_thumbnails[1]} pages done then); "
          f"pages done over time: {seen}")
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE

    # Keyboard: End, PageUp, PageDown, Home, n, p.
    for key, expected in (("End", 8), ("PageUp", 7), ("PageDown", 8), ("Home", 1), ("n", 2),
                          ("p", 1), ("End", 8)):
        page.keyboard.press(key)
        assert page.evaluate("planzoom.page") == expected, key
        assert page.get_attribute(f'.page[data-page="{expected}"]', "aria-current") == "true"

    # The last page at 1:1 (one image pixel per CSS pixel), on whole pixels.
    record = job.pages[7]
    w, h = VIEW[0] - 150, VIEW[1] - 60  # inside the stage, whatever the header's height
    x0, y0 = record.width_px // 2 - 300, record.height_px // 2 - 200
    page.wait_for_function("() => planzoom.viewer.world.getItemCount() > 0")
    # The sheet index arrives as the job ends and adds the header's sheet
    # tools: measured after it, so that the view's size stays put.
    page.wait_for_function("() => planzoom.sheets && Object.keys(planzoom.sheets).length === 8")
    # A header of a whole number of pixels, so that the stage starts on a
    # whole pixel (its wrapped rows can sum to a fraction).
    page.add_style_tag(content="header { height: 64px; overflow: hidden; }")
    # Fitted again if the stage was laid out anew meanwhile (the strip's
    # labels and the header's sheet tools arrive with the index): what is
    # checked is a view at exactly 1:1 once the layout has settled.
    for _ in range(3):
        page.evaluate("""([x0, y0]) => {
            const v = planzoom.viewer, item = v.world.getItemAt(0);
            const c = v.viewport.getContainerSize();
            v.viewport.fitBounds(item.imageToViewportRectangle(x0, y0, c.x, c.y), true);
            v.navigator && (v.navigator.element.style.display = "none");
            // The sheet's callout hotspots are drawn over it: what is compared is the tiles.
            v.clearOverlays();
        }""", [x0, y0])
        page.wait_for_function("() => planzoom.viewer.world.getItemAt(0).getFullyLoaded()",
                               timeout=60_000)
        page.wait_for_timeout(300)  # the last tiles' fade-in
        zoom = page.evaluate("planzoom.viewer.viewport.viewportToImageZoom("
                             "planzoom.viewer.viewport.getZoom(true))")
        if abs(zoom - 1) < 1e-6:
            break
    assert abs(zoom - 1) < 1e-6
    shot = page.locator("#osd").screenshot()
    Path(stack.data_dir / "viewer-1to1.png").write_bytes(shot)
    image = pyvips.Image.new_from_buffer(shot, "")[:3]
    pixels = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                        shape=(image.height, image.width, 3))
    # Compare away from the corners, where OpenSeadragon draws its controls.
    cx, cy, cw, ch = 60, 60, min(w, pixels.shape[1]) - 120, min(h, pixels.shape[0]) - 120
    ours = pixels[cy:cy + ch, cx:cx + cw]
    reference = pdfium_region(corpus / SET, 8, record.width_px, record.height_px,
                              x0 + cx, y0 + cy, cw, ch)
    Path(stack.data_dir / "pdfium-1to1.png").write_bytes(
        pyvips.Image.new_from_memory(reference.tobytes(), cw, ch, 3, "uchar").pngsave_buffer())
    value = psnr(ours, reference)
    shifted = psnr(pixels[cy:cy + ch, cx + 1:cx + cw + 1], reference)
    print(f"1:1 region of page 8 against PDFium: PSNR {value:.1f} dB "
          f"(one pixel off: {shifted:.1f} dB)")
    assert value >= MIN_PSNR_DB
    assert shifted < value - 3  # the comparison can tell a one-pixel shift

    assert page.inner_text("#zoom").endswith("% of paper size")
    assert not failures, failures
    assert not errors, errors
    context.close()


def test_viewer_without_a_token_says_what_to_do(stack, browser):
    page = browser.new_page()
    page.goto(f"{stack.gateway_url}/view/01a228a0b2ee0d37a9df8b")
    assert "no token" in page.inner_text("#state")
    page.close()


def test_the_demo_export_opens_from_disk(stack, browser, corpus, client, tmp_path):
    from planzoom_devstack.export import export_job

    resp = client.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                         jobs_pb2.PlanRef(org="acme", project="viewer", plan="offline"),
                         jobs_pb2.JobOptions(dpi=50))
    job = wait_ended(client, resp.job_id)
    index, files = export_job(stack, job, tmp_path)
    assert files > 7 * 3 and (tmp_path / job.job_id / "manifest.json").exists()
    page = browser.new_page()
    failures: list[str] = []
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}"))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(index.as_uri())
    page.wait_for_function("() => planzoom.viewer.world.getItemCount() > 0 && "
                           "planzoom.viewer.world.getItemAt(0).getFullyLoaded()")
    assert page.evaluate("document.querySelectorAll('.page img').length") == 7
    page.keyboard.press("End")
    page.wait_for_function("() => planzoom.page === 7 && planzoom.viewer.world.getItemCount() > 0"
                           " && planzoom.viewer.world.getItemAt(0).getFullyLoaded()")
    # Drawn, not blank: the canvas holds the sheet's dark line work.
    shot = pyvips.Image.new_from_buffer(page.locator("#osd").screenshot(), "")[:3]
    assert shot.min() < 60 and shot.max() > 200
    assert not failures and not errors, (failures, errors)
    page.close()


def test_the_viewer_plays_a_video_with_hls_js(stack, browser, corpus, client):
    """A site video's HLS preview plays in chromium through the bundled
    hls.js, segments fetched with the signed link, for a few seconds."""
    resp = client.submit(str(corpus / "media" / "video-h264-mp4-chaplin-moviepy.mp4"),
                         jobs_pb2.PlanRef(org="acme", project="viewer", plan="video"),
                         jobs_pb2.JobOptions())
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    page = browser.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url) if "/events" not in r.url else None)
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(f"{stack.gateway_url}/view/{resp.job_id}#token={stack.token('acme', 'viewer')}")
    page.wait_for_function("() => window.planzoom && window.planzoom.hls", timeout=30_000)
    try:  # the manifest and the first segment are in
        page.wait_for_function("() => document.getElementById('video').readyState >= 2",
                               timeout=30_000)
    finally:
        print(page.text_content("#state"), failed, console)
    page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; "
                  "return v.play(); }")
    page.wait_for_function("() => document.getElementById('video').currentTime > 2",
                           timeout=30_000)
    assert page.evaluate("() => document.getElementById('video').videoWidth") == 640
    assert not page.text_content("#state").startswith("error"), page.text_content("#state")
    assert failed == [], failed
    assert page.evaluate("() => document.getElementById('osd').hidden")
    page.close()


def test_the_viewer_reads_archives_straight_from_the_bucket(stack, browser, corpus, client,
                                                            s3_proxy):
    """A job of layout ARCHIVE, opened with #source=archive: its tiles come
    from the pages' archives in the bucket by range requests (presigned
    URLs, the pmtiles reader), none through the gateway's tile route."""
    resp = client.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                         jobs_pb2.PlanRef(org="acme", project="viewer", plan="archives"),
                         jobs_pb2.JobOptions(dpi=60, layout=jobs_pb2.PYRAMID_LAYOUT_ARCHIVE))
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE
    page = browser.new_page()
    failures: list[str] = []
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}")
            if "/events" not in r.url else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{stack.gateway_url}/view/{job.job_id}#token={stack.token('acme', 'viewer')}"
              "&source=archive")
    for n in (1, 7):
        page.evaluate(f"planzoom.select({n})")
        page.wait_for_function(f"() => planzoom.page === {n} && planzoom.shown === '{n}:dzi' "
                               "&& planzoom.viewer.world.getItemCount() > 0 && "
                               "planzoom.viewer.world.getItemAt(0).getFullyLoaded()",
                               timeout=30_000)
        shot = pyvips.Image.new_from_buffer(page.locator("#osd").screenshot(), "")[:3]
        assert shot.min() < 80 and shot.max() > 200, f"page {n} is drawn"
    from_bucket = [u for u in requested if ".pmtiles" in u]
    assert from_bucket and all(u.startswith(stack.s3_endpoint) or
                               u.startswith(s3_proxy.url) for u in from_bucket)
    assert not [u for u in requested if "_files/" in u], "no tile through the gateway"
    assert not failures and not errors, (failures, errors)
    page.close()
