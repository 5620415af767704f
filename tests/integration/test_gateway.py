"""The HTTP gateway against the running stack, over real sockets: job
records, Server-Sent Events, descriptors and tiles with bearer tokens and
signed links, and every refusal as an RFC 9457 problem document."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
import zipfile

import httpx
import pytest
import pyvips

from planzoom.dzi import DziInfo, level_size, parse_dzi
from planzoom.states import ended
from planzoom.v1 import jobs_pb2
from tests.helpers import wait_ended, wait_until
from tests.integration.conftest import client_for

SETS = "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="gateway", plan="renovation")
DZI_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


def bearer(stack, org="acme", role="viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token(org, role)}"}


@pytest.fixture(scope="module")
def done_job(corpus, client):
    resp = client.submit(str(corpus / SETS), PLAN, jobs_pb2.JobOptions(dpi=30))
    return wait_ended(client, resp.job_id)


def assert_problem(resp: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"] and body["title"]
    assert "Traceback" not in resp.text and "tiles/" not in body["detail"]
    if reason:
        assert body["reason"] == reason
    return body


def test_job_record_needs_a_token_of_its_org(stack, http, done_job):
    url = f"/v1/jobs/{done_job.job_id}"
    assert_problem(http.get(url), 401, "UNAUTHENTICATED")
    assert_problem(http.get(url, headers={"Authorization": "Bearer nonsense"}), 401)
    assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 404)
    assert_problem(http.get("/v1/jobs/not..an..id", headers=bearer(stack)), 400)
    body = http.get(url, headers=bearer(stack)).json()
    assert body["job_id"] == done_job.job_id
    assert body["state"] == "JOB_STATE_COMPLETE"
    assert [p["page"] for p in body["pages"]] == list(range(1, 8))
    assert body["pages"][0]["width_pt"] > 0 and body["pages"][0]["dpi"] == 30


def test_plan_jobs_lists_newest_first_and_refuses_other_orgs(stack, http, done_job):
    url = "/v1/plans/acme/gateway/renovation/jobs"
    jobs = http.get(url, headers=bearer(stack)).json()["jobs"]
    assert done_job.job_id in [j["job_id"] for j in jobs]
    assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 403,
                   "PERMISSION_DENIED")
    assert_problem(http.get(url + "?limit=100000", headers=bearer(stack)), 400)


def test_plan_jobs_come_page_by_page(stack, http, corpus, client):
    """Five jobs of a plan, two a page: three pages, newest first, each job
    once; a token whose job is not in the plan is refused."""
    plan = jobs_pb2.PlanRef(org="acme", project="gateway", plan="pages")
    made = [client.submit(str(corpus / SETS), plan, jobs_pb2.JobOptions(dpi=20 + n)).job_id
            for n in range(5)]
    url = "/v1/plans/acme/gateway/pages/jobs"
    seen, token, pages = [], "", 0
    while True:
        body = http.get(url, params={"limit": 2, "page_token": token},
                        headers=bearer(stack)).json()
        assert len(body["jobs"]) <= 2
        seen += [j["job_id"] for j in body["jobs"]]
        pages, token = pages + 1, body["next_page_token"]
        if not token:
            break
    assert seen == made[::-1] and pages == 3
    assert_problem(http.get(url, params={"page_token": "0" * 22}, headers=bearer(stack)), 400)
    for job_id in made:
        wait_ended(client, job_id)


def sse_events(http, url: str, headers: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(event, id, data) of every event until the server ends the stream."""
    events, event, ident, data = [], "message", "", []
    with http.stream("GET", url, headers=headers, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append((event, ident, json.loads("\n".join(data))))
                event, ident, data = "message", "", []
    return events


def test_events_follow_a_job_to_its_end_and_resume_after_last_event_id(
        stack, http, corpus, client):
    resp = client.submit(str(corpus / SETS), PLAN, jobs_pb2.JobOptions(dpi=31))
    url = f"/v1/jobs/{resp.job_id}/events"
    events = sse_events(http, url, bearer(stack))
    assert events and all(e == "job" for e, _, _ in events)
    revisions = [int(i) for _, i, _ in events]
    assert revisions == sorted(set(revisions))
    assert events[-1][2]["state"] == "JOB_STATE_COMPLETE"
    assert events[-1][2]["manifest_key"]
    done = [sum(p["state"] == "PAGE_STATE_DONE" for p in d["pages"]) for _, _, d in events]
    assert done == sorted(done) and done[-1] == 7
    # Reconnecting after the last event: nothing more. After an earlier one:
    # only newer records, ending at the same final one.
    assert sse_events(http, url, {**bearer(stack), "Last-Event-ID": str(revisions[-1])}) == []
    later = sse_events(http, url, {**bearer(stack), "Last-Event-ID": str(revisions[0])})
    assert later and all(int(i) > revisions[0] for _, i, _ in later)
    assert later[-1][2] == events[-1][2]
    assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 404)


def test_event_deltas_rebuild_the_record_in_fewer_bytes(stack, http, corpus, client):
    """``?deltas=true``: a whole record first, then the summary and the
    changed pages only; put together they are the record GET returns, and
    they weigh less than whole records would."""
    resp = client.submit(str(corpus / SETS), PLAN, jobs_pb2.JobOptions(dpi=32))
    url = f"/v1/jobs/{resp.job_id}/events"
    events = sse_events(http, url + "?deltas=true", bearer(stack))
    assert events[0][0] == "job" and len(events) > 3
    assert {e for e, _, _ in events[1:]} == {"delta"}
    job = events[0][2]
    assert any(len(delta["pages"]) < 7 for _, _, delta in events[1:])
    for _, _, delta in events[1:]:
        pages = job["pages"]
        for page in delta["pages"]:
            pages[page["page"] - 1] = page
        job = {**delta, "pages": pages}
    final = http.get(f"/v1/jobs/{resp.job_id}", headers=bearer(stack)).json()
    assert job == final and job["state"] == "JOB_STATE_COMPLETE"
    assert all(p["dzi_key"] and p["variants"] for p in job["pages"])
    whole = sum(len(json.dumps(d)) for _, _, d in sse_events(http, url, bearer(stack)))
    assert whole == len(json.dumps(final))  # the job has ended: one record
    # A delta holds what changed: never more than the record, often far less
    # (how many pages one holds depends on how the events were batched; the
    # last gives every page of a PDF its sheet, so it holds them all).
    deltas = [len(json.dumps(d)) for _, _, d in events[1:]]
    assert max(deltas) <= whole and min(deltas) < whole / 3, deltas
    # Resuming: a whole record first again.
    later = sse_events(http, url + "?deltas=true",
                       {**bearer(stack), "Last-Event-ID": events[1][1]})
    assert later[0][0] == "job" and later[0][2] == final


def test_tiles_with_a_token_are_cacheable_and_conditional(stack, http, done_job):
    base = f"/v1/jobs/{done_job.job_id}/pages"
    dzi = http.get(f"{base}/3.dzi", headers=bearer(stack))
    assert dzi.status_code == 200 and dzi.headers["content-type"].startswith("application/xml")
    image = ET.fromstring(dzi.content)
    size = image.find(f"{DZI_NS}Size")
    page = done_job.pages[2]
    assert (int(size.get("Width")), int(size.get("Height"))) == (page.width_px, page.height_px)
    assert image.get("Format") == page.format
    top = page.levels - 1
    tile = http.get(f"{base}/3_files/{top}/0_0.{page.format}", headers=bearer(stack))
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert tile.content[:3] == b"\xff\xd8\xff"
    # A shared cache keys on the URL: what a token read stays private.
    assert "immutable" in tile.headers["cache-control"]
    assert tile.headers["cache-control"].startswith("private,")
    assert "public" not in dzi.headers["cache-control"]
    again = http.get(f"{base}/3_files/{top}/0_0.{page.format}",
                     headers={**bearer(stack), "If-None-Match": tile.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert_problem(http.get(f"{base}/3_files/{top + 5}/0_0.jpg", headers=bearer(stack)), 404)
    assert_problem(http.get(f"{base}/9.dzi", headers=bearer(stack)), 404)
    for bad in ("3.xml", "../../x.dzi", "0.dzi"):
        assert http.get(f"{base}/{bad}", headers=bearer(stack)).status_code in (400, 404)
    assert_problem(http.get(f"{base}/3_files/0/0_0.exe", headers=bearer(stack)), 404)
    # Another org's job answers as a job that does not exist, word for word.
    theirs = assert_problem(http.get(f"{base}/3.dzi", headers=bearer(stack, org="intruder")), 404)
    unknown_id = "0" * len(done_job.job_id)
    none = assert_problem(http.get(f"/v1/jobs/{unknown_id}/pages/3.dzi",
                                   headers=bearer(stack, org="intruder")), 404)
    assert {k: theirs[k] for k in ("title", "reason")} == {k: none[k] for k in ("title", "reason")}
    assert theirs["detail"] == none["detail"].replace(unknown_id, done_job.job_id)
    assert_problem(http.get(f"{base}/3.dzi"), 401)


def test_signed_links_open_one_job_only_until_they_expire(stack, http, done_job, corpus,
                                                          client):
    links = http.get(f"/v1/jobs/{done_job.job_id}/links", headers=bearer(stack)).json()
    assert len(links["dzi"]) == 7 and links["expires_at"]
    dzi = http.get(links["dzi"][0])
    assert dzi.status_code == 200 and b"deepzoom" in dzi.content
    cap = links["cap"]
    base = f"/v1/jobs/{done_job.job_id}/pages"
    tile = http.get(f"{base}/1_files/0/0_0.jpg", params={"cap": cap})
    # The URL is the grant: a shared cache may keep it.
    assert tile.status_code == 200 and tile.headers["cache-control"].startswith("public,")
    # The link opens nothing else: another job, the job record, a forgery.
    other = client.submit(str(corpus / SETS), PLAN, jobs_pb2.JobOptions(dpi=32))
    assert_problem(http.get(f"/v1/jobs/{other.job_id}/pages/1.dzi", params={"cap": cap}), 404)
    assert_problem(http.get(f"/v1/jobs/{done_job.job_id}", params={"cap": cap}), 401)
    forged = cap[:-4] + ("AAAA" if not cap.endswith("AAAA") else "BBBB")
    assert_problem(http.get(f"{base}/1.dzi", params={"cap": forged}), 401, "BAD_LINK")
    assert ended(wait_ended(client, other.job_id))


def test_cors_preflight_lets_another_origin_send_a_bearer_token(http, done_job):
    resp = http.options(f"/v1/jobs/{done_job.job_id}/pages/1.dzi", headers={
        "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "https://viewer.example")
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()


def test_oversized_bodies_and_unknown_routes_are_problems(stack, http):
    big = http.post("/v1/jobs/x", content=b"x" * (70 * 1024), headers=bearer(stack))
    assert_problem(big, 413, "BODY_TOO_LARGE")
    assert_problem(http.get("/v1/nothing-here"), 404)
    spec = http.get("/openapi.json").json()
    assert "/v1/jobs/{job_id}/events" in spec["paths"]


def test_each_caller_has_its_own_rate(stack):
    url = stack.start_gateway(name="gateway-rate", env={"PLANZOOM_GATEWAY_RATE_PER_SECOND": "5"})
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            path = "/v1/plans/acme/gateway/renovation/jobs?limit=1"
            codes = [c.get(path, headers=bearer(stack)).status_code for _ in range(12)]
            assert codes.count(200) >= 5 and 429 in codes
            limited = c.get(path, headers=bearer(stack))
            if limited.status_code == 429:
                assert_problem(limited, 429, "RATE_LIMITED")
                assert int(limited.headers["retry-after"]) >= 1
            # Another caller is not held back by the first one's rate.
            assert c.get("/v1/plans/other/p/q/jobs",
                         headers=bearer(stack, org="other")).status_code == 200
            # Forged tokens are throttled by address.
            bad = [c.get(path, headers={"Authorization": "Bearer x"}).status_code
                   for _ in range(12)]
            assert bad.count(401) >= 5 and 429 in bad
    finally:
        stack.stop_service("gateway-rate")


def check_zip_pyramids(data: bytes, job_id: str) -> dict[int, DziInfo]:
    """Every DZI in a downloaded zip: a complete tile grid on every level its
    descriptor implies, top-level tiles of the sizes DZI prescribes, and a
    manifest that agrees. Returns the descriptors by page."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    names = set(archive.namelist())
    manifest = json.loads(archive.read(f"{job_id}/manifest.json"))
    found: dict[int, DziInfo] = {}
    for record in manifest["pages"]:
        n = record["page"]
        dzi = parse_dzi(archive.read(f"{job_id}/page-{n}.dzi"))
        assert (dzi.width, dzi.height) == (record["width_px"], record["height_px"])
        assert dzi.levels == record["levels"] and dzi.tile_count() == int(record["tile_count"])
        files = f"{job_id}/page-{n}_files/"
        tiles = {name[len(files):] for name in names if name.startswith(files)}
        expected = {f"{level}/{c}_{r}.{dzi.format}" for level in range(dzi.levels)
                    for c in range(dzi.grid(level)[0]) for r in range(dzi.grid(level)[1])}
        assert tiles == expected, f"page {n}: tiles differ from the DZI grid"
        top = dzi.levels - 1
        for c in range(dzi.grid(top)[0]):
            for r in range(dzi.grid(top)[1]):
                tile = pyvips.Image.new_from_buffer(
                    archive.read(f"{files}{top}/{c}_{r}.{dzi.format}"), "")
                assert (tile.width, tile.height) == dzi.tile_box(top, c, r)[2:]
        found[n] = dzi
    return found


def test_download_is_a_zip_of_valid_pyramids_sized_up_front(stack, http, done_job):
    url = f"/v1/jobs/{done_job.job_id}/download"
    head = http.head(url, headers=bearer(stack))
    assert head.status_code == 200 and head.headers["content-type"] == "application/zip"
    resp = http.get(url, headers=bearer(stack))
    assert resp.status_code == 200
    assert int(head.headers["content-length"]) == len(resp.content)
    assert "attachment" in resp.headers["content-disposition"]
    pyramids = check_zip_pyramids(resp.content, done_job.job_id)
    assert sorted(pyramids) == list(range(1, 8))
    assert all((d.width, d.height) == (p.width_px, p.height_px)
               for d, p in zip(pyramids.values(), done_job.pages, strict=True))
    names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    # The sheet index and every page's words come along.
    assert f"{done_job.job_id}/sheets.json" in names
    assert all(f"{done_job.job_id}/page-{n}.words.json.gz" in names for n in range(1, 8))


def test_offline_bundle_keeps_only_the_pages_and_levels_asked_for(stack, http, done_job):
    resp = http.get(f"/v1/jobs/{done_job.job_id}/download",
                    params={"pages": "2,4-5", "max_level": 6}, headers=bearer(stack))
    assert resp.status_code == 200
    pyramids = check_zip_pyramids(resp.content, done_job.job_id)
    assert sorted(pyramids) == [2, 4, 5]
    for n, dzi in pyramids.items():
        full = done_job.pages[n - 1]
        assert dzi.levels == 7  # levels 0..6: a valid DZI of the level-6 image
        assert (dzi.width, dzi.height) == level_size(full.width_px, full.height_px, 6)
    names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    assert not [n for n in names if "_files/7/" in n or "page-1" in n]


def test_a_bundle_with_the_viewer_opens_by_itself(stack, http, done_job):
    resp = http.get(f"/v1/jobs/{done_job.job_id}/download",
                    params={"pages": "2", "viewer": "true"}, headers=bearer(stack))
    assert resp.status_code == 200
    bundle = zipfile.ZipFile(io.BytesIO(resp.content))
    names = set(bundle.namelist())
    assert {"index.html", "static/viewer.js", "static/vendor/openseadragon/openseadragon.min.js",
            f"{done_job.job_id}/page-2.thumbnail.jpg", f"{done_job.job_id}/page-2.dzi"} <= names
    assert not [n for n in names if "page-1" in n], "only the page asked for"
    index = bundle.read("index.html").decode()
    assert f'"base": "{done_job.job_id}/"' in index and '"mode": "static"' in index
    assert "</script>" in index and done_job.job_id in index


def test_downloads_refuse_what_they_should(stack, http, done_job, corpus, client):
    url = f"/v1/jobs/{done_job.job_id}/download"
    assert_problem(http.get(url, params={"pages": "0"}, headers=bearer(stack)), 400)
    assert_problem(http.get(url, params={"pages": "3-99"}, headers=bearer(stack)), 400)
    assert_problem(http.get(url, params={"pages": "a"}, headers=bearer(stack)), 400)
    assert_problem(http.get(url, params={"max_level": -1}, headers=bearer(stack)), 400)
    assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 404)
    assert_problem(http.get(url), 401)
    cap = http.get(f"/v1/jobs/{done_job.job_id}/links", headers=bearer(stack)).json()["cap"]
    assert http.head(url, params={"cap": cap}).status_code == 200
    running = client.submit(str(corpus / SETS), PLAN, jobs_pb2.JobOptions(dpi=200))
    assert_problem(http.get(f"/v1/jobs/{running.job_id}/download", headers=bearer(stack)),
                   409, "JOB_RUNNING")
    wait_ended(client, running.job_id)


def test_batch_download_holds_each_job(stack, http, done_job, corpus, client):
    other = wait_ended(client, client.submit(str(corpus / SETS), PLAN,
                                                jobs_pb2.JobOptions(dpi=33)).job_id)
    link = http.post("/v1/downloads", json={"jobs": [done_job.job_id, other.job_id],
                                            "max_level": 5}, headers=bearer(stack))
    assert link.status_code == 200, link.text
    body = link.json()
    resp = httpx.get(body["url"], timeout=60)  # no header: the URL is the grant
    assert resp.status_code == 200 and len(resp.content) == body["size_bytes"]
    for job in (done_job, other):
        assert all(d.levels == 6 for d in check_zip_pyramids(resp.content, job.job_id).values())
    assert_problem(httpx.get(body["url"][:-3] + "xyz"), 401, "BAD_LINK")
    assert_problem(http.post("/v1/downloads", json={"jobs": [done_job.job_id]},
                             headers=bearer(stack, org="intruder")), 404)
    assert_problem(http.post("/v1/downloads", json={"jobs": []}, headers=bearer(stack)), 400)


def test_zips_are_bounded_per_request_and_one_org_cannot_take_them_all(
        stack, done_job, corpus, s3_proxy):
    """A gateway with a 40-file zip limit and two zip slots, one per org: a
    whole job (about a hundred files) is refused 400 before anything is
    listed, one page of it is sent; while one of acme's zips is held (its
    tile reads hang in S3), acme's next is refused 429 and another org's
    goes through; once the held one is let go and dropped, acme may again."""
    other = client_for(stack, "bravo")
    try:
        theirs = wait_ended(other, other.submit(
            str(corpus / SETS), jobs_pb2.PlanRef(org="bravo", project="gateway", plan="zips"),
            jobs_pb2.JobOptions(dpi=30)).job_id)
    finally:
        other.close()
    url = stack.start_gateway(name="gateway-zips", env={
        "PLANZOOM_GATEWAY_MAX_ZIP_ENTRIES": "40",
        "PLANZOOM_GATEWAY_MAX_CONCURRENT_ZIPS": "2",
        "PLANZOOM_GATEWAY_MAX_CONCURRENT_ZIPS_PER_ORG": "1"})
    mine = f"/v1/jobs/{done_job.job_id}/download"
    try:
        with httpx.Client(base_url=url, timeout=30) as gw:
            too_large = assert_problem(gw.get(mine, headers=bearer(stack)), 400, "ZIP_TOO_LARGE")
            assert "?pages=" in too_large["detail"] and "ARCHIVE" in too_large["detail"]
            assert_problem(gw.post("/v1/downloads", json={"jobs": [done_job.job_id]},
                                   headers=bearer(stack)), 400, "ZIP_TOO_LARGE")
            one_page = gw.get(mine, params={"pages": "1"}, headers=bearer(stack))
            assert one_page.status_code == 200
            assert check_zip_pyramids(one_page.content, done_job.job_id).keys() == {1}

            s3_proxy.match, s3_proxy.hang = f"{done_job.job_id}/page-1_files/", 1.0
            try:
                with gw.stream("GET", mine, params={"pages": "1"}, headers=bearer(stack)) as held:
                    assert held.status_code == 200
                    wait_until("the held zip reads a tile", lambda: s3_proxy.counts["hang"] >= 1)
                    busy = gw.get(mine, params={"pages": "2"}, headers=bearer(stack))
                    assert_problem(busy, 429, "TOO_MANY_DOWNLOADS")
                    assert int(busy.headers["retry-after"]) >= 1
                    bravo = gw.get(f"/v1/jobs/{theirs.job_id}/download", params={"pages": "1"},
                                   headers=bearer(stack, org="bravo"))
                    assert bravo.status_code == 200, bravo.text
                    s3_proxy.hang = 0.0
                    s3_proxy.release()
            finally:
                s3_proxy.hang, s3_proxy.match = 0.0, ""
                s3_proxy.release()
            wait_until("acme's slot is free again", lambda: gw.get(
                mine, params={"pages": "2"}, headers=bearer(stack)).status_code == 200)
    finally:
        stack.stop_service("gateway-zips")
