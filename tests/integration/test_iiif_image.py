"""The IIIF Image API 3.0 against the running stack: info.json, regions
cut from the stored pyramid (both layouts) equal to the same pixels read
through the DZI tile routes, the stored tile's bytes for a request on the
tile grid, access as the tile routes have it, limits, and the official
validator (``iiif-validator``) at compliance level 2 on its own test
image converted through the stack."""

from __future__ import annotations

import concurrent.futures

import httpx
import numpy as np
import pytest
import pyvips

from planzoom.dzi import parse_dzi
from planzoom.v1 import jobs_pb2
from tests.dzi_check import psnr
from tests.helpers import wait_ended
from tests.integration.test_gateway import assert_problem, bearer

TEST_IMAGE = "iiif/67352ccc-d1b0-11e1-89ae-279075081939.png"  # the validator's, 1000 x 1000
SET = "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"
VIDEO = "media/video-mov-iphone6-rotate90-metadata-extractor-images.mov"
FILES, ARCHIVE = jobs_pb2.PYRAMID_LAYOUT_FILES, jobs_pb2.PYRAMID_LAYOUT_ARCHIVE
JSON_LD = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
PROFILE = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'


@pytest.fixture(scope="module")
def jobs(corpus, client) -> dict[str, jobs_pb2.Job]:
    """The validator's image in both layouts and without overlap, a plan
    set at 100 DPI in both layouts, and a video, converted at once."""
    plan = jobs_pb2.PlanRef(org="acme", project="iiif", plan="image")
    submitted = {
        "png": (TEST_IMAGE, jobs_pb2.JobOptions(layout=FILES)),
        "png_archive": (TEST_IMAGE, jobs_pb2.JobOptions(layout=ARCHIVE)),
        "png_flush": (TEST_IMAGE, jobs_pb2.JobOptions(overlap=0)),
        "pdf": (SET, jobs_pb2.JobOptions(dpi=100, layout=FILES)),
        "pdf_archive": (SET, jobs_pb2.JobOptions(dpi=100, layout=ARCHIVE)),
        "video": (VIDEO, jobs_pb2.JobOptions()),
    }
    ids = {name: client.submit(str(corpus / path), plan, options).job_id
           for name, (path, options) in submitted.items()}
    done = {name: wait_ended(client, job_id) for name, job_id in ids.items()}
    assert all(j.state == jobs_pb2.JOB_STATE_COMPLETE for j in done.values())
    return done


def cap(http, stack, job: jobs_pb2.Job) -> str:
    return http.get(f"/v1/jobs/{job.job_id}/links", headers=bearer(stack)).json()["cap"]


def image(data: bytes) -> np.ndarray:
    im = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=im.write_to_memory(), dtype=np.uint8,
                      shape=(im.height, im.width, im.bands))


def level_pixels(http, stack, job_id: str, page: int, level: int | None = None) -> np.ndarray:
    """A whole pyramid level (default: full resolution) assembled from
    the page's DZI tiles as a DZI viewer reads them."""
    headers = bearer(stack)
    dzi = parse_dzi(http.get(f"/v1/jobs/{job_id}/pages/{page}.dzi", headers=headers).content)
    level = dzi.levels - 1 if level is None else level
    w, h = dzi.level_size(level)
    cols, rows = dzi.grid(level)
    out = None
    for row in range(rows):
        for col in range(cols):
            url = f"/v1/jobs/{job_id}/pages/{page}_files/{level}/{col}_{row}.jpg"
            tile = image(http.get(url, headers=headers).content)
            out = np.zeros((h, w, tile.shape[2]), np.uint8) if out is None else out
            tx, ty, _, _ = dzi.tile_box(level, col, row)
            x0, y0 = col * dzi.tile_size, row * dzi.tile_size
            x1, y1 = min(w, x0 + dzi.tile_size), min(h, y0 + dzi.tile_size)
            out[y0:y1, x0:x1] = tile[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    return out


def run_validator(server: str, prefix: str, identifier: str, level: int = 2) -> dict:
    """Every test of ``iiif-validator`` for Image API 3.0 up to ``level``,
    run as its command line runs them: {test: None, or what failed}."""
    from iiif_validator.validator import ImageAPI, TestSuite, ValidationInfo

    tests = TestSuite(ValidationInfo()).list_tests("3.0")
    results = {}
    for name in sorted(tests):
        if tests[name]["level"] > level:
            continue
        result = ImageAPI(identifier, server, prefix, "http", "", "3.0", debug=False)
        try:
            TestSuite(ValidationInfo()).run_test(name, result)
            failure = result.exception
        except Exception as e:  # the validator's own way to fail a test
            failure = e
        results[name] = None if failure is None else f"{failure!r} {result.urls[-1:]}"
    failed = {k: v for k, v in results.items() if v}
    print(f"iiif-validator 3.0 level {level} on {identifier}: Done ({len(results)} tests, "
          f"{len(failed)} failures)")
    return results


@pytest.mark.parametrize("layout", ["png", "png_archive"])
def test_the_official_validator_passes_every_level_2_test(stack, http, jobs, layout):
    job = jobs[layout]
    results = run_validator(stack.gateway_url.removeprefix("http://"),
                            f"iiif/3/cap/{cap(http, stack, job)}", f"{job.job_id}-1")
    assert len(results) >= 30
    assert {k: v for k, v in results.items() if v} == {}


def test_info_json_names_the_url_it_came_through(stack, http, jobs):
    job = jobs["pdf"]
    ident, record = f"{job.job_id}-3", job.pages[2]
    resp = http.get(f"/iiif/3/{ident}/info.json", headers=bearer(stack))
    assert resp.status_code == 200 and resp.headers["content-type"] == JSON_LD
    assert resp.headers["link"] == PROFILE and "Accept" in resp.headers["vary"]
    assert resp.headers["cache-control"].startswith("private")
    doc = resp.json()
    assert doc["id"] == f"{stack.gateway_url}/iiif/3/{ident}"
    assert (doc["@context"], doc["type"], doc["protocol"], doc["profile"]) == (
        "http://iiif.io/api/image/3/context.json", "ImageService3",
        "http://iiif.io/api/image", "level2")
    assert (doc["width"], doc["height"]) == (record.width_px, record.height_px)
    assert doc["tiles"] == [{"width": record.tile_size, "height": record.tile_size,
                             "scaleFactors": [2**k for k in range(record.levels)]}]
    assert doc["sizes"] and all(s["width"] <= record.width_px for s in doc["sizes"])
    head = http.head(f"/iiif/3/{ident}/info.json", headers=bearer(stack))
    assert head.status_code == 200 and head.headers["etag"] == resp.headers["etag"]
    assert head.content == b""
    plain = http.get(f"/iiif/3/{ident}/info.json",
                     headers={**bearer(stack), "Accept": "application/json"})
    assert plain.headers["content-type"] == "application/json" and plain.json() == doc
    link = cap(http, stack, job)
    by_path = http.get(f"/iiif/3/cap/{link}/{ident}/info.json")
    assert by_path.json()["id"] == f"{stack.gateway_url}/iiif/3/cap/{link}/{ident}"
    assert by_path.headers["cache-control"].startswith("public")
    by_query = http.get(f"/iiif/3/{ident}/info.json", params={"cap": link})
    assert by_query.json()["id"] == by_path.json()["id"]
    base = http.get(f"/iiif/3/cap/{link}/{ident}")
    assert base.status_code == 303
    assert base.headers["location"] == f"{stack.gateway_url}/iiif/3/cap/{link}/{ident}/info.json"


def test_a_region_is_the_same_pixels_as_the_dzi_tiles(stack, http, jobs):
    """At full resolution a region equals the image assembled from the DZI
    tiles; at a smaller scale, the region of that level; in layout ARCHIVE
    the answers are the same bytes."""
    job = jobs["pdf"]
    full = level_pixels(http, stack, job.job_id, 1)
    h, w = full.shape[:2]
    rng = np.random.default_rng(27)
    for _ in range(4):
        rw, rh = int(rng.integers(100, 600)), int(rng.integers(100, 600))
        x, y = int(rng.integers(0, w - rw)), int(rng.integers(0, h - rh))
        url = f"/iiif/3/{job.job_id}-1/{x},{y},{rw},{rh}/max/0/default.png"
        got = image(http.get(url, headers=bearer(stack)).content)
        assert got.shape == (rh, rw, full.shape[2]) and psnr(got, full[y:y + rh, x:x + rw]) > 45
        archived = http.get(url.replace(job.job_id, jobs["pdf_archive"].job_id),
                            headers=bearer(stack)).content
        assert image(archived).shape == got.shape and psnr(image(archived), got) > 45
    record = job.pages[0]
    top = record.levels - 1
    quarter = level_pixels(http, stack, job.job_id, 1, top - 2)
    edge_x, edge_y = (w - 412) // 4 * 4, (h - 300) // 4 * 4  # to the right and bottom edges
    for x, y, rw, rh in ((0, 0, 800, 600), (124, 340, 400, 4 * 97),
                         (edge_x, edge_y, w - edge_x, h - edge_y)):
        url = f"/iiif/3/{job.job_id}-1/{x},{y},{rw},{rh}/{-(-rw // 4)},/0/default.png"
        got = image(http.get(url, headers=bearer(stack)).content)
        want = quarter[y // 4:-(-(y + rh) // 4), x // 4:-(-(x + rw) // 4)]
        assert got.shape == want.shape and psnr(got, want) > 45
    # Off the level's grid: within half a pixel of the region resized.
    got = image(http.get(f"/iiif/3/{job.job_id}-1/101,203,501,401/250,/0/default.png",
                         headers=bearer(stack)).content)
    want = pyvips.Image.new_from_array(full[203:604, 101:602]).resize(250 / 501,
                                                                      vscale=200 / 401)
    want = np.ndarray(buffer=want.write_to_memory(), dtype=np.uint8, shape=got.shape)
    assert psnr(got, want) > 18


def test_a_request_on_the_tile_grid_is_the_stored_tile(stack, http, jobs):
    for name in ("png", "png_archive", "png_flush"):
        job = jobs[name]
        stored = http.get(f"/v1/jobs/{job.job_id}/pages/1_files/7/0_0.jpg",
                          headers=bearer(stack)).content
        got = http.get(f"/iiif/3/{job.job_id}-1/full/125,125/0/default.jpg",
                       headers=bearer(stack))
        assert got.content == stored and got.headers["content-type"] == "image/jpeg"
    flush = jobs["png_flush"].job_id
    for x, y, level, col, row, size in ((256, 512, 10, 1, 2, "256,256"),
                                        (768, 768, 10, 3, 3, "232,232"),
                                        (512, 0, 9, 1, 0, "244,256")):
        s = 2 ** (10 - level)
        w, h = (int(v) * s for v in size.split(","))
        w, h = min(w, 1000 - x), min(h, 1000 - y)
        got = http.get(f"/iiif/3/{flush}-1/{x},{y},{w},{h}/{size}/0/color.jpg",
                       headers=bearer(stack)).content
        stored = http.get(f"/v1/jobs/{flush}/pages/1_files/{level}/{col}_{row}.jpg",
                          headers=bearer(stack)).content
        assert got == stored
    # With an overlap the stored tile is larger: the answer is its core, re-encoded.
    png = jobs["png"].job_id
    got = http.get(f"/iiif/3/{png}-1/256,256,256,256/256,256/0/default.jpg",
                   headers=bearer(stack)).content
    stored = image(http.get(f"/v1/jobs/{png}/pages/1_files/10/1_1.jpg",
                            headers=bearer(stack)).content)
    assert stored.shape == (258, 258, 3) and psnr(image(got), stored[1:257, 1:257]) > 40


def test_access_answers_as_the_tile_routes_do(stack, http, jobs):
    job, other = jobs["png"], jobs["pdf"]
    ident = f"{job.job_id}-1"
    region = "0,0,100,100/max/0/default.jpg"
    assert_problem(http.get(f"/iiif/3/{ident}/info.json"), 401, "UNAUTHENTICATED")
    assert_problem(http.get(f"/iiif/3/{ident}/{region}"), 401, "UNAUTHENTICATED")
    link = cap(http, stack, job)
    ok = http.get(f"/iiif/3/cap/{link}/{ident}/{region}")
    assert ok.status_code == 200 and ok.headers["cache-control"].startswith("public")
    assert PROFILE in ok.headers["link"]
    assert f'<{stack.gateway_url}/iiif/3/cap/{link}/{ident}/{region}>;rel="canonical"' in \
        ok.headers["link"]
    assert http.get(f"/iiif/3/{ident}/{region}", headers=bearer(stack)).headers[
        "cache-control"].startswith("private")
    # Another job's link, another org's token, an unknown job: the same 404.
    assert_problem(http.get(f"/iiif/3/cap/{link}/{other.job_id}-1/info.json"), 404)
    intruder = assert_problem(http.get(f"/iiif/3/{ident}/info.json",
                                       headers=bearer(stack, org="intruder")), 404)
    unknown = assert_problem(http.get(f"/iiif/3/{'0' * 22}-1/info.json",
                                      headers=bearer(stack)), 404)
    assert (intruder["detail"], intruder["reason"]) == (
        unknown["detail"].replace("0" * 22, job.job_id), unknown["reason"])
    assert_problem(http.get(f"/iiif/3/cap/forged.link/{ident}/info.json"), 401, "BAD_LINK")
    assert_problem(http.get(f"/iiif/3/{job.job_id}-2/info.json", headers=bearer(stack)), 404,
                   "NOT_FOUND")
    video = jobs["video"].job_id
    body = assert_problem(http.get(f"/iiif/3/{video}-1/info.json", headers=bearer(stack)), 404,
                          "NO_IMAGE_SERVICE")
    assert "video" in body["detail"]
    assert_problem(http.get("/iiif/3/not-an-image/info.json", headers=bearer(stack)), 404)


@pytest.mark.parametrize("request_path,reason,words", [
    ("full/^10001,/0/default.jpg", "IIIF_TOO_LARGE", "maxWidth"),
    ("0,0,500,1000/^,10001/0/default.jpg", "IIIF_TOO_LARGE", "maxHeight"),
    ("full/^5001,5001/0/default.jpg", "IIIF_TOO_LARGE", "maxArea"),
    ("full/1001,/0/default.jpg", "IIIF_UPSCALE", "^"),
    ("1000,0,10,10/max/0/default.jpg", "IIIF_EMPTY", "outside"),
    ("full/max/45/default.jpg", "IIIF_BAD_REQUEST", "90"),
    ("full/max/0/default.gif", "IIIF_BAD_REQUEST", "jpg, png, webp"),
    ("full/full/0/default.jpg", "IIIF_BAD_REQUEST", "max"),
])
def test_limits_and_bad_requests_are_400_with_the_rule_named(stack, http, jobs, request_path,
                                                             reason, words):
    body = assert_problem(http.get(f"/iiif/3/{jobs['png'].job_id}-1/{request_path}",
                                   headers=bearer(stack)), 400, reason)
    assert words in body["detail"]


def test_upscaling_with_the_caret_and_the_other_formats(stack, http, jobs):
    ident = f"{jobs['png'].job_id}-1"
    up = http.get(f"/iiif/3/{ident}/full/^1500,/90/gray.webp", headers=bearer(stack))
    assert up.status_code == 200 and up.headers["content-type"] == "image/webp"
    assert image(up.content).shape[:2] == (1500, 1500)
    big = http.get(f"/iiif/3/{ident}/full/^max/0/default.png", headers=bearer(stack))
    assert image(big.content).shape[:2] == (5000, 5000)  # maxArea 25 MP


def test_one_gateway_cuts_a_bounded_number_of_regions(stack, jobs):
    url = stack.start_gateway(name="gateway-iiif", env={
        "PLANZOOM_IIIF_MAX_CONCURRENT_REGIONS": "1", "PLANZOOM_IIIF_MAX_WAITING_REGIONS": "0"})
    try:
        ident = f"{jobs['pdf'].job_id}-1"
        headers = bearer(stack)
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http, \
                concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses, busy = [], None
            for attempt in range(5):
                paths = [f"/iiif/3/{ident}/{k},{attempt},800,1000/max/0/default.png"
                         for k in range(8)]
                answers = list(pool.map(http.get, paths))
                statuses += [a.status_code for a in answers]
                busy = busy or next((a for a in answers if a.status_code == 503), None)
                if busy is not None:
                    break
        assert busy is not None and set(statuses) <= {200, 503} and 200 in statuses
        body = assert_problem(busy, 503, "REGIONS_BUSY")
        assert busy.headers["retry-after"] and "PLANZOOM_IIIF" in body["detail"]
    finally:
        stack.stop_service("gateway-iiif")
