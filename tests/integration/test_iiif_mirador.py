"""IIIF viewers in a real browser (Debian's chromium driven by Playwright)
against the running stack: Mirador 4, served by the gateway, opens a plan
set's manifest from its cap URL (no header): every sheet listed by its
label, the thumbnail strip, deep zoom at 1:1 with no failed request, a
search hit highlighted on its sheet; and plain OpenSeadragon opens a page's
Image API service from its info.json."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from tests.integration.test_gateway import bearer
from tests.integration.test_iiif_presentation import plan_set  # noqa: F401 - the fixture
from tests.integration.test_viewer import browser  # noqa: F401 - the fixture

VIEW = (1280, 800)
SHOT = Path("/tmp/planzoom-mirador.png")


def watch(page) -> list[str]:
    """Failed requests and answers of 400 and up, as they happen."""
    failures: list[str] = []
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: failures.append(f"{r.url}: {r.status}")
            if r.status >= 400 else None)
    page.on("pageerror", lambda e: failures.append(f"page error: {e}"))
    return failures


def cap_manifest(stack, job_id: str) -> tuple[str, dict]:
    """The job's manifest URL in its cap form, and the manifest."""
    links = httpx.get(f"{stack.gateway_url}/v1/jobs/{job_id}/links",
                      headers=bearer(stack), timeout=30).json()
    url = f"{stack.gateway_url}/iiif/3/cap/{links['cap']}/jobs/{job_id}/manifest"
    return url, httpx.get(url, timeout=30).json()


def test_mirador_opens_a_set_zooms_to_one_to_one_and_finds_a_word(stack, browser,  # noqa: F811
                                                                  plan_set):  # noqa: F811
    url, manifest = cap_manifest(stack, plan_set.job_id)
    labels = [c["label"]["none"][0] for c in manifest["items"]]
    context = browser.new_context(viewport={"width": VIEW[0], "height": VIEW[1]},
                                  device_scale_factor=1)
    page = context.new_page()
    failures = watch(page)
    tiles: list[str] = []
    page.on("response", lambda r: tiles.append(r.url)
            if "/iiif/3/cap/" in r.url and r.url.endswith("/default.jpg") and r.ok else None)
    page.goto(f"{stack.gateway_url}/iiif/3/mirador/view?manifest={quote(url, safe='')}")
    page.wait_for_function(
        "u => { const m = planzoomMirador.store.getState().manifests[u];"
        " return m && m.json && !m.isFetching; }", arg=url, timeout=60_000)

    # Every sheet listed by its label (the Index panel), and the thumbnail strip.
    for label in labels:
        page.get_by_text(label, exact=True).first.wait_for(timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img')].filter(i => i.complete &&"
        " i.naturalWidth > 0 && i.src.includes('.thumbnail.jpg')).length >= 4",
        timeout=30_000)

    # The sheet's callouts, listed as annotations by where they lead.
    page.get_by_role("tab", name="Annotations").first.click()
    section = labels[3]  # the crayfish inn's plans call out sections on 300-00
    page.get_by_text(f"→ {section}").first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOT.with_name("planzoom-mirador-callouts.png")))

    # Deep zoom at 1:1: the view's width in canvas pixels is its width on screen.
    window_id = page.evaluate("Object.keys(planzoomMirador.store.getState().windows)[0]")
    page.wait_for_function("() => document.querySelector('.openseadragon-canvas canvas')")
    width_px = page.evaluate("document.querySelector('.openseadragon-canvas').clientWidth")
    first = plan_set.pages[0]
    page.evaluate("""([w, z, x, y]) => planzoomMirador.store.dispatch(
        Mirador.updateViewport(w, {x, y, zoom: z}))""",
                  [window_id, 1 / width_px, first.width_px / 2, first.height_px / 2])
    page.wait_for_function(
        "([w]) => Math.abs(planzoomMirador.store.getState().viewers[w].zoom * "
        "document.querySelector('.openseadragon-canvas').clientWidth - 1) < 1e-6",
        arg=[window_id], timeout=30_000)
    page.wait_for_timeout(3000)  # the tiles of the 1:1 level load and fade in
    # A full-resolution tile: its region's width is the size asked for.
    full = [u for u in tiles if _one_to_one(u)]
    assert full, tiles[-10:]
    before = yellow(page.locator(".openseadragon-canvas").first.screenshot())

    # Search: the hit is listed, selected and drawn over its sheet.
    page.get_by_role("tab", name="Search").first.click()
    box = page.get_by_label("search terms")
    box.fill("roof plan")
    box.press("Enter")
    page.get_by_text("ROOF PLAN").first.wait_for(timeout=30_000)
    page.wait_for_function(
        "([w]) => (planzoomMirador.store.getState().windows[w]"
        ".selectedContentSearchAnnotationIds || []).length > 0 || "
        "Object.values(planzoomMirador.store.getState().searches[w] || {})"
        ".some(s => (s.selectedContentSearchAnnotationIds || []).length > 0)",
        arg=[window_id], timeout=30_000)
    # Its hit selected, centred at 1:1, is drawn over its words in the hit's colour.
    page.get_by_text("SITE PLAN & ROOF PLAN").first.click()
    hit = next(a for a in search_hits(stack, plan_set.job_id) if a["body"]["value"] ==
               "ROOF PLAN" and a["target"].startswith(manifest["items"][0]["id"] + "#"))
    page.wait_for_function(
        "([w, id]) => Object.values(planzoomMirador.store.getState().searches[w] || {})"
        ".some(s => (s.selectedContentSearchAnnotationIds || []).includes(id))",
        arg=[window_id, hit["id"]], timeout=30_000)
    x, y, w, h = map(int, hit["target"].split("#xywh=")[1].split(","))
    page.evaluate("""([w, z, x, y]) => planzoomMirador.store.dispatch(
        Mirador.updateViewport(w, {x, y, zoom: z}))""",
                  [window_id, 1 / width_px, x + w / 2, y + h / 2])
    page.wait_for_timeout(2500)  # its tiles, the overlay redrawn
    page.screenshot(path=str(SHOT))
    after = yellow(page.locator(".openseadragon-canvas").first.screenshot())
    assert after > before + 200, (before, after)
    assert not failures, failures[:10]
    context.close()


def yellow(png: bytes) -> int:
    """Pixels of Mirador's selected search hit colour (yellow, 30 % over
    the sheet) in a screenshot."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Yellow at alpha 0.3 over paper: (255, 255, ~179); over ink, darker.
    return int(((r > 150) & (abs(r - g) < 20) & (r - b > 50)).sum())


def search_hits(stack, job_id: str) -> list[dict]:
    r = httpx.get(f"{stack.gateway_url}/iiif/3/jobs/{job_id}/search", params={"q": "roof plan"},
                  headers=bearer(stack), timeout=30)
    return r.json()["items"]


def _one_to_one(url: str) -> bool:
    """An Image API request whose size is its region's: full resolution."""
    parts = url.split("?")[0].split("/")
    region, size = parts[-4], parts[-3]
    if region in ("full", "square") or "," not in region:
        return False
    w = region.split(",")[2]
    return size in (f"{w},", f"{w},{region.split(',')[3]}", "max")


def test_openseadragon_opens_an_image_service(stack, browser, plan_set):  # noqa: F811
    url, manifest = cap_manifest(stack, plan_set.job_id)
    service = manifest["items"][2]["items"][0]["items"][0]["body"]["service"][0]["id"]
    context = browser.new_context(viewport={"width": 900, "height": 600})
    page = context.new_page()
    failures = watch(page)
    page.goto(f"{stack.gateway_url}/healthz")  # the gateway's origin, its scripts
    page.set_content(f"""<div id="osd" style="width:900px;height:600px"></div>
        <script src="{stack.gateway_url}/static/vendor/openseadragon/openseadragon.min.js">
        </script>""")
    page.wait_for_function("() => window.OpenSeadragon")
    page.evaluate("""src => { window.osd = OpenSeadragon({id: "osd", tileSources: src,
        showNavigationControl: false}); }""", service + "/info.json")
    page.wait_for_function("() => osd.world.getItemCount() === 1 && "
                           "osd.world.getItemAt(0).getFullyLoaded()", timeout=60_000)
    size = page.evaluate("[osd.world.getItemAt(0).source.width, "
                         "osd.world.getItemAt(0).source.height]")
    assert size == [plan_set.pages[2].width_px, plan_set.pages[2].height_px]
    assert not failures, failures[:10]
    context.close()
