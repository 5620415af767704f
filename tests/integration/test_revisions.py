"""Sheet versions against the running stack: a real set, then an addendum
made from it (one sheet re-plotted with a move and an added element, one
re-issued as it was) submitted to the same plan: the plan's current set
(HTTP, gRPC, CLI, current.json), the addendum's record and the first set's
sheets left current. Then a real re-issue (tests/fixtures/revisions): an
architect's 3-sheet set and its site plan sent again 18 days later."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planzoom import keys
from planzoom.v1 import events_pb2, jobs_pb2
from planzoom_devstack.revise import Edit, revise
from services.tile import overlays
from tests.helpers import completed, wait_ended, wait_until
from tests.integration.test_gateway import assert_problem, bearer
from tests.integration.test_store import store  # noqa: F401 - the fixture
from tests.integration.test_viewer import browser  # noqa: F401 - the fixture

SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="revisions", plan="crayfishinn")
DPI = 40


@pytest.fixture(scope="module")
def versions(corpus, client, tmp_path_factory):
    first = completed(client, str(corpus / SET), PLAN, jobs_pb2.JobOptions(dpi=DPI))
    addendum = str(tmp_path_factory.mktemp("revisions") / "addendum.pdf")
    # Sheet 100-00 re-plotted moved and scaled with a new element; 201-00 as it was.
    moves = revise(str(corpus / SET), addendum, [1, 3],
                   {1: Edit(shift=(0.02, 0.01), scale=1.02, add=[(0.3, 0.3, 0.05, 0.05)])})
    second = completed(client, addendum, PLAN, jobs_pb2.JobOptions(dpi=DPI))
    return first, second, moves[1]


def test_an_addendum_slips_into_the_plans_current_set(http, stack, versions):
    first, second, _ = versions
    body = http.get(f"/v1/plans/{PLAN.org}/{PLAN.project}/{PLAN.plan}/sheets",
                    headers=bearer(stack)).json()
    assert body["job_id"] == second.job_id
    current = {s["number"]: s for s in body["sheets"]}
    assert list(current) == ["100-00", "200-00", "201-00", "300-00", "400-00", "500-00",
                             "700-00", "701-00"]
    site = current["100-00"]
    assert (site["job_id"], site["page"]) == (second.job_id, 1)
    assert [(v["job_id"], v["page"], v["change"], v["paired_by"]) for v in site["versions"]] \
        == [(second.job_id, 1, "revised", "number"), (first.job_id, 1, "new", "")]
    first_floor = current["201-00"]
    assert (first_floor["job_id"], first_floor["page"]) == (second.job_id, 2)
    assert [v["change"] for v in first_floor["versions"]] == ["unchanged", "new"]
    for number in ("200-00", "300-00", "701-00"):  # not in the addendum: from the first set
        assert current[number]["job_id"] == first.job_id
        assert len(current[number]["versions"]) == 1
    assert current["200-00"]["title"].upper() == "GROUND FLOOR PLAN"
    # The issue date its title block prints, on the sheet and each version.
    assert site["issued"] == "04/12/2016" and site["revision"] is None
    assert {v["issued"] for v in site["versions"]} == {"04/12/2016"}


def test_the_addendums_record_says_what_changed_against_what(client, versions):
    first, second, _ = versions
    record = client.get_job(second.job_id)
    site, first_floor = record.pages[0].sheet, record.pages[1].sheet
    assert (site.change, site.paired_by) == ("revised", "number")
    assert (site.previous.job_id, site.previous.page) == (first.job_id, 1)
    assert (first_floor.change, first_floor.previous.page) == ("unchanged", 3)
    assert record.pages[0].content_digest != client.get_job(first.job_id).pages[0].content_digest
    assert record.pages[1].content_digest == client.get_job(first.job_id).pages[2].content_digest
    # The first set's record met no earlier version.
    assert {p.sheet.change for p in client.get_job(first.job_id).pages} == {"new"}


def test_current_json_and_list_sheets_hold_the_versions(client, s3, versions):
    first, second, _ = versions
    key = f"tiles/{PLAN.org}/{PLAN.project}/{PLAN.plan}/current.json"
    current = json.loads(s3.get_object(Bucket="planzoom", Key=key)["Body"].read())
    assert current["job_id"] == second.job_id and current["register_jobs"] == 2
    assert len(current["sheets"]) == 8
    resp = client.list_sheets(PLAN)
    assert [(s.job_id, s.page) for s in resp.sheets][:3] == [
        (second.job_id, 1), (first.job_id, 2), (second.job_id, 2)]
    assert [v.change for v in resp.sheets[0].versions] == ["revised", "new"]


def test_cli_prints_the_plans_current_set(stack, versions):
    from planzoom_cli.main import main

    first, second, _ = versions
    runner = CliRunner()
    env = {**stack.env(), "PLANZOOM_TOKEN": stack.token("acme", "viewer"), "COLUMNS": "200"}
    args = ["sheets", "--org", PLAN.org, "--project", PLAN.project, "--plan", PLAN.plan]
    out = runner.invoke(main, args, env=env, terminal_width=200)
    assert out.exit_code == 0, out.output
    assert f"{second.job_id}:1 revised" in out.output and f"{first.job_id}:1 new" in out.output
    rows = json.loads(runner.invoke(main, [*args, "--json"], env=env).output)["sheets"]
    assert [r["number"] for r in rows][:3] == ["100-00", "200-00", "201-00"]
    bad = runner.invoke(main, ["sheets", "--plan", PLAN.plan], env=env)
    assert bad.exit_code != 0 and "--org" in bad.output


def test_a_plans_search_reads_its_current_set_across_jobs(http, stack, versions):
    first, second, _ = versions
    body = http.get("/v1/search", params={"q": "ramsgate", "plan": "acme/revisions/crayfishinn"},
                    headers=bearer(stack)).json()
    got = [(h["job_id"], h["page"], h["sheet"]) for h in body["hits"]]
    # Every current sheet once, in the set's order; the versions the addendum
    # replaced (the first set's pages 1 and 3) not at all.
    assert [g[2] for g in got] == ["100-00", "200-00", "201-00", "300-00", "400-00", "500-00",
                                   "700-00", "701-00"], got
    assert got[0][:2] == (second.job_id, 1) and got[2][:2] == (second.job_id, 2)
    assert (first.job_id, 1) not in [g[:2] for g in got]
    assert (first.job_id, 3) not in [g[:2] for g in got]


def test_another_orgs_plan_is_refused(http, stack, versions):
    assert_problem(http.get(f"/v1/plans/intruder/{PLAN.project}/{PLAN.plan}/sheets",
                            headers=bearer(stack)), 403)


def test_a_revised_sheet_is_laid_over_its_previous_version(http, stack, versions):
    first, second, move = versions
    url = f"/v1/jobs/{second.job_id}/pages/1/overlay"

    def ready():
        r = http.get(url, headers=bearer(stack))
        if r.status_code == 409:
            assert r.json()["reason"] == "OVERLAY_NOT_READY" and r.headers["Retry-After"]
            return None
        return r

    resp = wait_until("the overlay", ready, timeout=60, interval=0.5)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["previous"] == {"job_id": first.job_id, "page": 1}
    # The true move, display points to the pages' pixels at DPI.
    s = DPI / 72
    truth = np.array([[move[0], move[2], move[4] * s], [move[1], move[3], move[5] * s]])
    found = np.array(body["transform"]).reshape(2, 3)
    page = second.pages[0]
    corners = np.array([[0, 0], [page.width_px, 0], [0, page.height_px],
                        [page.width_px, page.height_px]], float)
    error = np.linalg.norm(corners @ (truth - found)[:, :2].T + (truth - found)[:, 2], axis=1)
    assert error.max() < 1.5, (body["transform"], truth)
    added = [c for c in body["changes"] if c["kind"] == "added"]
    assert len(added) == 1, body["changes"]
    x, y, w, h = added[0]["box"]
    tx, ty, tw, th = (0.3 * page.width_px, 0.3 * page.height_px, 0.05 * page.width_px,
                      0.05 * page.height_px)
    overlap = max(0, min(x + w, tx + tw) - max(x, tx)) * max(0, min(y + h, ty + th) - max(y, ty))
    assert overlap / (w * h + tw * th - overlap) > 0.7, (added, (tx, ty, tw, th))
    assert not [c for c in body["changes"] if c["kind"] != "added"]
    # Its pyramid: previous red, this one blue, both grey.
    dzi = http.get(body["dzi"], headers=bearer(stack))
    assert dzi.status_code == 200 and b"<Image" in dzi.content
    top = max(body["width"], body["height"]).bit_length()
    tile = http.get(f"{body['dzi'].removesuffix('.dzi')}_files/{top}/0_0.jpg",
                    headers=bearer(stack))
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert body["provisional"] is False  # its job has ended: the set's pairing stands


def test_a_page_with_no_revision_has_no_overlay(http, stack, versions):
    first, second, _ = versions
    for job, page in ((second, 2), (first, 1)):  # unchanged; the first version
        assert_problem(http.get(f"/v1/jobs/{job.job_id}/pages/{page}/overlay",
                                headers=bearer(stack)), 404, "NO_PREVIOUS_VERSION")
    assert_problem(http.get(f"/v1/jobs/{second.job_id}/pages/1/overlay",
                            headers=bearer(stack, org="intruder")), 404)


def test_viewer_overlays_a_revised_sheet_with_its_changes(stack, browser, versions,  # noqa: F811
                                                         tmp_path):
    first, second, _ = versions
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{stack.gateway_url}/view/{second.job_id}#token={stack.token('acme', 'viewer')}")
    page.wait_for_function("() => planzoom.sheets && planzoom.sheets[1] && "
                           "planzoom.viewer.world.getItemCount() === 1")
    assert page.is_visible("#overlay-toggle")
    page.wait_for_function("() => document.querySelector('#versions').textContent"
                           ".includes('revised')")
    assert f"{first.job_id[-6:]} p1 (new)" in page.inner_text("#versions")
    before = page.screenshot(clip={"x": 0, "y": 0, "width": 1200, "height": 800})
    page.check("#overlay-toggle")
    page.wait_for_function("() => planzoom.revisions.shown && planzoom.viewer.world"
                           ".getItemCount() === 2 && planzoom.viewer.world.getItemAt(1)"
                           ".getFullyLoaded() && document.querySelectorAll('.change').length"
                           " === 1", timeout=30_000)
    assert "1 change" in page.inner_text("#overlay-status")
    cloud = page.locator(".change").first.bounding_box()
    assert cloud and cloud["width"] > 4 and cloud["height"] > 4
    page.fill("#overlay-opacity", "100")
    page.dispatch_event("#overlay-opacity", "input")
    page.wait_for_timeout(500)
    shot = tmp_path / "overlay.png"
    page.screenshot(path=str(shot))
    after = shot.read_bytes()
    assert after != before
    # The overlay draws the previous version in red and this one in blue.
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((b > 180) & (r < 120)).sum() > 200  # what this version added, blue
    assert ((r > 150) & (g < 100) & (b > 150)).sum() > 50  # the cloud's magenta
    page.uncheck("#overlay-toggle")
    page.wait_for_function("() => planzoom.viewer.world.getItemCount() === 1 && "
                           "!document.querySelector('.change')")
    # An unchanged sheet says so and offers no overlay.
    page.evaluate("planzoom.select(2)")
    page.wait_for_function("() => document.querySelector('#overlay-status').textContent"
                           " === 'unchanged'")
    assert not page.is_visible("#overlay-toggle")
    assert not errors, errors
    page.close()


LIVE_PLAN = jobs_pb2.PlanRef(org="acme", project="revisions", plan="crayfish-live")


def test_a_revised_sheet_is_laid_over_while_its_set_still_renders(http, stack, client, corpus,
                                                                 tmp_path, store):  # noqa: F811
    """A revised sheet's overlay is made as soon as its page is done (over
    the version of the plan's current set with its number), not when the
    whole set ends: here the revised site plan comes first in a set of 29
    pages. The set's end confirms it; an overlay.json over another version
    (what a pairing the set's end changed leaves) is not served, and a
    provisional request never replaces one."""
    first = completed(client, str(corpus / SET), LIVE_PLAN, jobs_pb2.JobOptions(dpi=DPI))
    revised = str(tmp_path / "reissue.pdf")
    revise(str(corpus / SET), revised, [1] + list(range(2, 9)) * 4,
           {1: Edit(shift=(0.02, 0.01), scale=1.02, add=[(0.3, 0.3, 0.05, 0.05)])})
    second = client.submit(revised, LIVE_PLAN, jobs_pb2.JobOptions(dpi=DPI))
    url = f"/v1/jobs/{second.job_id}/pages/1/overlay"

    def made():
        r = http.get(url, headers=bearer(stack))
        if r.status_code == 200:
            return r.json(), client.get_job(second.job_id)
        assert r.status_code == 404 and r.json()["reason"] == "NO_PREVIOUS_VERSION", r.text
        return None

    early, job = wait_until("the provisional overlay", made, timeout=120, interval=0.2)
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING, "the overlay waited for the set's end"
    assert job.completed_pages < job.total_pages == 29
    assert early["provisional"] is True
    assert early["previous"] == {"job_id": first.job_id, "page": 1}
    assert [c["kind"] for c in early["changes"]] == ["added"]
    assert http.get(early["dzi"], headers=bearer(stack)).status_code == 200
    ended = wait_ended(client, second.job_id)
    assert ended.state == jobs_pb2.JOB_STATE_COMPLETE
    final = http.get(url, headers=bearer(stack)).json()
    assert final["provisional"] is False
    assert {k: v for k, v in final.items() if k != "provisional"} == \
        {k: v for k, v in early.items() if k != "provisional"}
    # Only the revised sheet was laid over: the others are unchanged.
    assert_problem(http.get(f"/v1/jobs/{second.job_id}/pages/2/overlay",
                            headers=bearer(stack)), 404, "NO_PREVIOUS_VERSION")

    key = keys.overlay_key(LIVE_PLAN, second.job_id, 1)
    kept = store.get_bytes(key)
    record = client.get_job(second.job_id)
    other = events_pb2.TileJob(job_id=second.job_id, plan=LIVE_PLAN, page=1, overlay=(
        events_pb2.OverlayRequest(previous_job_id=first.job_id, previous_page=2,
                                  provisional=True)))
    def put(key, data, content_type):
        raise AssertionError(f"a provisional request wrote {key} over a made overlay")

    assert overlays.make_overlay(store, other, record, put) is None
    assert store.get_bytes(key) == kept
    try:
        store.put_bytes(key, json.dumps({**json.loads(kept), "previous": {
            "job_id": first.job_id, "page": 2}}).encode(), "application/json")
        assert_problem(http.get(url, headers=bearer(stack)), 409, "OVERLAY_NOT_READY")
    finally:
        store.put_bytes(key, kept, "application/json")


REAL = Path(__file__).parent.parent / "fixtures" / "revisions"
REAL_PLAN = jobs_pb2.PlanRef(org="acme", project="revisions", plan="kegonsa")


def test_a_real_reissued_sheet_is_paired_and_laid_over_its_first_issue(http, stack, client):
    first = completed(client, str(REAL / "kegonsa-plans-2014-08-22.pdf"), REAL_PLAN,
                      jobs_pb2.JobOptions(dpi=150))
    second = completed(client, str(REAL / "kegonsa-site-plan-2014-09-09.pdf"), REAL_PLAN,
                       jobs_pb2.JobOptions(dpi=150))
    body = http.get(f"/v1/plans/{REAL_PLAN.org}/{REAL_PLAN.project}/{REAL_PLAN.plan}/sheets",
                    headers=bearer(stack)).json()
    current = {s["number"]: s for s in body["sheets"]}
    assert list(current) == ["A-100", "A-101", "A-102"]
    assert [(v["job_id"], v["change"], v["paired_by"]) for v in current["A-100"]["versions"]] \
        == [(second.job_id, "revised", "number"), (first.job_id, "new", "")]
    assert current["A-101"]["job_id"] == current["A-102"]["job_id"] == first.job_id
    url = f"/v1/jobs/{second.job_id}/pages/1/overlay"
    resp = wait_until("the overlay", lambda: (r := http.get(url, headers=bearer(stack)))
                      .status_code != 409 and r, timeout=60, interval=0.5)
    overlay = resp.json()
    assert resp.status_code == 200, overlay
    # Re-plotted at the same place and scale (the page turned by its /Rotate
    # only): the words printed on both meet within a pixel, and the revised
    # notes and outlines are found.
    m = np.array(overlay["transform"]).reshape(2, 3)  # previous pixels onto these
    assert np.abs(m[:, :2] - np.eye(2)).max() < 0.005 and np.abs(m[:, 2]).max() < 3
    assert overlay["method"] == "words" and overlay["residual_px"] < 1.0
    assert len(overlay["changes"]) >= 5
