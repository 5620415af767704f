"""Sheets against the running stack: a plan set's sheet numbers, titles and
callouts read while it renders (gRPC record, ``sheets.json``, manifest,
HTTP, CLI), search inside its sheets over HTTP, every refusal, and the
viewer in Chromium: strip labels, a search highlighted on the sheet and a
callout that opens its sheet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planzoom.engines.titleblock import number_key
from planzoom.v1 import jobs_pb2
from tests.helpers import completed, wait_ended
from tests.integration.test_gateway import assert_problem, bearer
from tests.integration.test_viewer import browser  # noqa: F401 - the fixture

SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="sheets", plan="crayfishinn")
DPI = 50


def expected(corpus: Path, name: str) -> dict[int, dict]:
    """What a person reads on each page of ``name`` (the corpus's sheets.json)."""
    rows = json.loads((corpus / "sheets.json").read_text())
    return {r["page"]: r for r in rows if r["file"] == name}


@pytest.fixture(scope="module")
def plan_set(corpus, client):
    return completed(client, str(corpus / SET), PLAN, jobs_pb2.JobOptions(dpi=DPI))


def test_every_sheet_is_read_with_its_number_and_title(corpus, http, stack, s3, plan_set):
    want = expected(corpus, SET)
    body = http.get(f"/v1/jobs/{plan_set.job_id}/sheets", headers=bearer(stack)).json()
    sheets = {s["page"]: s for s in body["sheets"]}
    assert sorted(sheets) == list(range(1, 9))
    for n, row in want.items():
        s = sheets[n]
        assert s["number"] == row["sheet_number"], (n, s)
        assert s["title"].upper() == row["sheet_title"].upper(), (n, s)
        assert s["source"] == "text" and not s["needs_review"] and s["confidence"] >= 0.8
        # The number's box is where it is printed: bottom right, inside the page.
        x, y, w, h = s["box"]
        page = plan_set.pages[n - 1]
        assert 0.8 * page.width_px < x < x + w <= page.width_px
        assert 0.8 * page.height_px < y < y + h <= page.height_px
    assert sheets[7]["discipline"] == "electrical"
    # The record (gRPC) carries them too, and the manifest in full.
    record = {p.page: p.sheet for p in plan_set.pages}
    assert [record[n].number for n in sorted(want)] == [want[n]["sheet_number"]
                                                         for n in sorted(want)]
    manifest = json.loads(s3.get_object(Bucket="planzoom",
                                        Key=plan_set.manifest_key)["Body"].read())
    assert manifest["pages"][0]["sheet"]["number"] == "100-00"


def test_section_callouts_link_to_the_section_sheet(http, stack, plan_set):
    body = http.get(f"/v1/jobs/{plan_set.job_id}/sheets", headers=bearer(stack)).json()
    sheets = {s["page"]: s for s in body["sheets"]}
    # The plans carry section bubbles ("A" over "300-00"); sheet 300-00 is page 4.
    for n in (1, 2, 3, 7, 8):
        refs = sheets[n]["references"]
        assert refs and {r["page"] for r in refs} == {4}, (n, refs)
        assert all(number_key(r["number"]) == "30000" for r in refs)
        page = plan_set.pages[n - 1]
        for r in refs:
            x, y, w, h = r["box"]
            assert 0 <= x and x + w <= page.width_px and 0 <= y and y + h <= page.height_px
    assert sheets[4]["references"] == []  # the section sheet itself links nowhere


def test_search_finds_words_on_their_sheets(http, stack, plan_set):
    url = f"/v1/search?job_id={plan_set.job_id}"
    hits = http.get(url + "&q=roof plan", headers=bearer(stack)).json()["hits"]
    assert {h["page"] for h in hits} >= {1}
    first = next(h for h in hits if h["page"] == 1 and "SITE PLAN & ROOF PLAN" in h["text"])
    assert first["sheet"] == "100-00" and len(first["boxes"]) == 2  # "ROOF", "PLAN"
    # Case and accents aside, word prefixes, construction text as typed.
    assert http.get(url + "&q=%C3%A9lectrical", headers=bearer(stack)).json()["hits"]
    assert {h["page"] for h in http.get(url + "&q=electr", headers=bearer(stack))
            .json()["hits"]} >= {7, 8}
    assert http.get(url + "&q=300-00", headers=bearer(stack)).json()["hits"]
    assert http.get(url + "&q=zzzqqq", headers=bearer(stack)).json()["hits"] == []
    # Every word of every title is found on its sheet.
    for p in plan_set.pages:
        for word in p.sheet.title.split():
            if any(c.isalnum() for c in word):
                found = http.get("/v1/search", params={"job_id": plan_set.job_id, "q": word},
                                 headers=bearer(stack)).json()["hits"]
                assert p.page in {h["page"] for h in found}, (p.page, word)
    # The plan's current set searches the same.
    plan_hits = http.get("/v1/search?plan=acme/sheets/crayfishinn&q=roof plan",
                         headers=bearer(stack)).json()["hits"]
    assert plan_hits and plan_hits[0]["job_id"] == plan_set.job_id


def test_search_across_a_project_or_an_org(http, stack, corpus):
    """The current sets of every plan of a project, or of the caller's org,
    searched at once: each hit names its plan; another org's is 404."""
    from tests.integration.conftest import client_for

    own = client_for(stack, "searchorg")
    try:
        plans = [jobs_pb2.PlanRef(org="searchorg", project=project, plan=plan)
                 for project, plan in (("alpha", "one"), ("alpha", "two"), ("beta", "three"))]
        for job in [own.submit(str(corpus / SET), plan, jobs_pb2.JobOptions(dpi=20))
                    for plan in plans]:
            assert wait_ended(own, job.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    finally:
        own.close()
    token = bearer(stack, org="searchorg")

    def found(**scope) -> dict:
        resp = http.get("/v1/search", params={"q": "roof plan", **scope}, headers=token)
        assert resp.status_code == 200, resp.text
        return resp.json()

    alpha = found(project="searchorg/alpha")
    assert {h["plan"] for h in alpha["hits"]} == {"searchorg/alpha/one", "searchorg/alpha/two"}
    assert not alpha["truncated"]
    assert all(h["sheet"] == "100-00" for h in alpha["hits"] if h["page"] == 1)
    everything = found(org="searchorg")
    assert {h["plan"] for h in everything["hits"]} == {f"searchorg/{p.project}/{p.plan}"
                                                       for p in plans}
    assert len(found(org="searchorg", limit=2)["hits"]) == 2
    assert found(org="searchorg", limit=2)["truncated"]
    assert_problem(http.get("/v1/search", params={"q": "roof", "org": "searchorg"},
                            headers=bearer(stack)), 404)
    assert_problem(http.get("/v1/search", params={"q": "roof", "project": "searchorg"},
                            headers=token), 400, "BAD_QUERY")
    assert_problem(http.get("/v1/search", params={"q": "roof", "org": "searchorg",
                                                  "project": "searchorg/alpha"},
                            headers=token), 400, "BAD_QUERY")


def test_search_refusals(http, stack, plan_set):
    url = f"/v1/search?job_id={plan_set.job_id}"
    assert_problem(http.get(url + "&q=roof"), 401)
    assert_problem(http.get(url + "&q=roof", headers=bearer(stack, org="intruder")), 404)
    assert_problem(http.get(url + "&q=%20%22%2A", headers=bearer(stack)), 400, "BAD_QUERY")
    assert_problem(http.get(url + "&q=" + "a" * 300, headers=bearer(stack)), 400)
    assert_problem(http.get("/v1/search?q=roof", headers=bearer(stack)), 400, "BAD_QUERY")
    assert_problem(http.get(url + "&plan=acme/sheets/crayfishinn&q=roof",
                            headers=bearer(stack)), 400, "BAD_QUERY")
    assert_problem(http.get("/v1/search?plan=intruder/sheets/crayfishinn&q=roof",
                            headers=bearer(stack)), 404)
    assert_problem(http.get("/v1/search?plan=acme/sheets&q=roof", headers=bearer(stack)), 400)
    # FTS5 syntax in a query is text, never an expression.
    assert http.get("/v1/search", params={"job_id": plan_set.job_id,
                                          "q": 'roof" OR plan NEAR(*'},
                    headers=bearer(stack)).status_code == 200


def test_a_page_s_words_come_gzipped_with_boxes(http, stack, s3, plan_set):
    resp = http.get(f"/v1/jobs/{plan_set.job_id}/pages/1/words", headers=bearer(stack))
    assert resp.status_code == 200 and resp.headers["content-encoding"] == "gzip"
    doc = resp.json()  # httpx decodes the gzip
    page = plan_set.pages[0]
    assert (doc["width"], doc["height"]) == (page.width_px, page.height_px)
    texts = [w[0] for w in doc["words"]]
    assert "100-00" in texts and "CRAYFISH" in texts
    raw = s3.get_object(Bucket="planzoom", Key=plan_set.tiles_prefix +
                        "page-1.words.json.gz")["Body"].read()
    assert json.loads(gzip.decompress(raw))["words"] == doc["words"]
    assert_problem(http.get(f"/v1/jobs/{plan_set.job_id}/pages/99/words",
                            headers=bearer(stack)), 404)
    assert_problem(http.get(f"/v1/jobs/{plan_set.job_id}/pages/1/words",
                            headers=bearer(stack, org="intruder")), 404)


def test_an_image_job_has_no_sheets(corpus, client, http, stack):
    photo = corpus / "media" / "photo-12mp-arch-building-galaxy-s7-metadata-extractor-images.jpg"
    resp = client.submit(str(photo), jobs_pb2.PlanRef(org="acme", project="sheets",
                                                       plan="photo"), jobs_pb2.JobOptions())
    job = wait_ended(client, resp.job_id)
    assert all(not p.sheet.number and not p.sheet.title for p in job.pages)
    assert_problem(http.get(f"/v1/jobs/{job.job_id}/sheets", headers=bearer(stack)), 404,
                   "SHEETS_NOT_READY")
    assert_problem(http.get(f"/v1/search?job_id={job.job_id}&q=x1", headers=bearer(stack)),
                   404, "SHEETS_NOT_READY")


def test_a_person_corrects_a_sheet_and_it_stays(http, stack, s3, client, plan_set):
    url = f"/v1/jobs/{plan_set.job_id}/pages/5/sheet"
    body = {"number": "400-01", "title": "Elevations (revised)"}
    assert_problem(http.put(url, json=body, headers=bearer(stack, role="viewer")), 403)
    assert_problem(http.put(url, json=body, headers=bearer(stack, org="intruder",
                                                              role="uploader")), 404)
    assert_problem(http.put(url.replace("/5/", "/99/"), json=body,
                            headers=bearer(stack, role="uploader")), 404, "SHEET_NOT_FOUND")
    assert_problem(http.put(url, json={"number": "x" * 201},
                            headers=bearer(stack, role="uploader")), 400)
    got = http.put(url, json=body, headers=bearer(stack, role="uploader")).json()
    assert (got["number"], got["title"], got["source"], got["confidence"], got["needs_review"]) \
        == ("400-01", "Elevations (revised)", "user", 1.0, False)
    # Everywhere the sheet shows: sheets.json, the record, the manifest, the plan's set.
    listed = http.get(f"/v1/jobs/{plan_set.job_id}/sheets", headers=bearer(stack)).json()
    assert listed["sheets"][4]["number"] == "400-01" and listed["sheets"][4]["source"] == "user"
    assert listed["sheets"][0]["references"]  # the rest as it was
    assert client.get_job(plan_set.job_id).pages[4].sheet.source == "user"
    manifest = json.loads(s3.get_object(Bucket="planzoom",
                                        Key=plan_set.manifest_key)["Body"].read())
    assert manifest["pages"][4]["sheet"]["number"] == "400-01"
    current = http.get("/v1/plans/acme/sheets/crayfishinn/sheets", headers=bearer(stack)).json()
    assert current["job_id"] == plan_set.job_id
    assert [s["number"] for s in current["sheets"]][3:6] == ["300-00", "400-01", "500-00"]
    assert_problem(http.get("/v1/plans/intruder/sheets/crayfishinn/sheets",
                            headers=bearer(stack, org="acme")), 403)
    assert_problem(http.get("/v1/plans/acme/sheets/nothing-yet/sheets",
                            headers=bearer(stack)), 404)
    # A reconcile reads nothing over it.
    client.reconcile(plan_set.job_id)
    assert client.get_job(plan_set.job_id).pages[4].sheet.number == "400-01"


def test_an_image_page_is_not_a_sheet_to_correct(corpus, client, http, stack):
    photo = corpus / "media" / "photo-12mp-arch-building-galaxy-s7-metadata-extractor-images.jpg"
    resp = client.submit(str(photo), jobs_pb2.PlanRef(org="acme", project="sheets",
                                                       plan="photo2"), jobs_pb2.JobOptions())
    wait_ended(client, resp.job_id)
    assert_problem(http.put(f"/v1/jobs/{resp.job_id}/pages/1/sheet", json={"number": "A-1"},
                            headers=bearer(stack, role="uploader")), 409, "NOT_A_SHEET")


def test_cli_prints_the_sheet_table(stack, plan_set):
    from planzoom_cli.main import main

    runner = CliRunner()
    env = {**stack.env(), "PLANZOOM_TOKEN": stack.token("acme", "viewer"), "COLUMNS": "200"}
    out = runner.invoke(main, ["sheets", plan_set.job_id], env=env, terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "100-00" in out.output and "SITE PLAN & ROOF PLAN" in out.output
    out = runner.invoke(main, ["sheets", plan_set.job_id, "--json"], env=env)
    rows = json.loads(out.output)["sheets"]
    assert [r["number"] for r in rows][:2] == ["100-00", "200-00"]


def test_viewer_labels_searches_and_follows_callouts(stack, browser, plan_set):  # noqa: F811
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{stack.gateway_url}/view/{plan_set.job_id}#token={stack.token('acme', 'viewer')}")
    page.wait_for_function("() => planzoom.sheets && Object.keys(planzoom.sheets).length === 8")
    labels = page.eval_on_selector_all(".page .label", "els => els.map(e => e.textContent)")
    assert labels[0].startswith("100-00 · Site plan & roof plan")
    assert labels[7].startswith("701-00 · Electrical first floor")
    assert not page.locator(".page .review").count()

    # A sheet number typed (another spelling) opens its sheet.
    page.fill("#goto", "500 00")
    page.press("#goto", "Enter")
    page.wait_for_function("() => planzoom.page === 6")

    # A search: its hit is highlighted on the sheet, and Enter steps on.
    page.fill("#search", "roof plan")
    page.press("#search", "Enter")
    page.wait_for_function("() => planzoom.hits.length > 0 && planzoom.page === 1 && "
                           "document.querySelectorAll('.hit').length > 0")
    assert "1 of" in page.inner_text("#search-count")
    box = page.locator(".hit.current").first.bounding_box()
    assert box and box["width"] > 2 and box["height"] > 2  # drawn on the sheet, visible

    # A section callout on the plan opens the section sheet.
    page.wait_for_function("() => document.querySelectorAll('.callout').length > 0")
    page.evaluate("planzoom.viewer.viewport.goHome(true)")
    callout = page.locator(".callout").first
    callout.scroll_into_view_if_needed()
    target = page.evaluate("planzoom.sheets[1].references[0]")
    callout.click(force=True)
    page.wait_for_function("() => planzoom.page === 4")
    assert "referenced from" in page.inner_text("#referenced")
    # ... at the section it names: the view fits round that section's title.
    x, y, w, h = target["target_box"]
    width = plan_set.pages[3].width_px
    page.wait_for_function(
        "([cx, cy]) => { const b = planzoom.viewer.viewport.getBounds(true);"
        " return b.width < 0.5 && b.x < cx && cx < b.x + b.width && b.y < cy &&"
        " cy < b.y + b.height; }", arg=[(x + w / 2) / width, (y + h / 2) / width])
    assert not errors, errors
    page.close()


def test_the_exported_set_searches_and_links_from_disk(stack, browser, plan_set,  # noqa: F811
                                                       tmp_path):
    # What `make demo` leaves: the offline bundle opened from disk, no server.
    from planzoom_devstack.export import export_job

    index, _ = export_job(stack, plan_set, tmp_path)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(index.as_uri())
    page.wait_for_function("() => planzoom.sheets && Object.keys(planzoom.sheets).length === 8 "
                           "&& planzoom.viewer.world.getItemCount() > 0")
    labels = page.eval_on_selector_all(".page .label", "els => els.map(e => e.textContent)")
    assert labels[0].startswith("100-00 · Site plan & roof plan")
    page.fill("#search", "roof plan")
    page.press("#search", "Enter")
    page.wait_for_function("() => planzoom.hits.length > 0 && planzoom.page === 1 && "
                           "document.querySelectorAll('.hit').length > 0")
    page.wait_for_function("() => document.querySelectorAll('.callout').length > 0")
    page.evaluate("planzoom.viewer.viewport.goHome(true)")
    page.locator(".callout").first.click(force=True)
    page.wait_for_function("() => planzoom.page === 4")
    assert not errors, errors
    page.close()
