"""IIIF manifests and Content Search against the running stack: a plan
set's manifest fetched with a bearer token names ids that all work with no
header (image services' info.json, thumbnails, word boxes, the zip, the
callouts, both searches, the manifest's own cap form); the cap form and the
plan's manifest; another org's job and plan answer as unknown ones; search
hits lie inside their canvas."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from planzoom.v1 import jobs_pb2
from tests.helpers import completed
from tests.integration.test_gateway import assert_problem, bearer

SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="iiif", plan="crayfishinn")
DPI = 50
PRESENTATION = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'


@pytest.fixture(scope="module")
def plan_set(corpus, client):
    return completed(client, str(corpus / SET), PLAN, jobs_pb2.JobOptions(dpi=DPI))


def fetched_ids(node) -> list[str]:
    """Every ``id``/``@id`` in a document that a client fetches: the ones
    carrying a signed link (in the path or as ``?cap=``)."""
    out = []
    if isinstance(node, list):
        for item in node:
            out += fetched_ids(item)
    elif isinstance(node, dict):
        for key in ("id", "@id"):
            value = node.get(key)
            if isinstance(value, str) and ("/iiif/3/cap/" in value or "?cap=" in value):
                out.append(value)
        for value in node.values():
            out += fetched_ids(value)
    return out


def test_a_bearer_manifest_names_ids_that_work_with_no_header(stack, http, plan_set):
    resp = http.get(f"/iiif/3/jobs/{plan_set.job_id}/manifest", headers=bearer(stack))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == PRESENTATION
    assert resp.headers["cache-control"].startswith("private")
    doc = resp.json()
    base = stack.gateway_url
    assert doc["id"] == f"{base}/iiif/3/jobs/{plan_set.job_id}/manifest"
    canvases = doc["items"]
    assert [c["id"] for c in canvases] == [f"{base}/iiif/3/jobs/{plan_set.job_id}/canvas/{n}"
                                           for n in range(1, 9)]
    sheets = http.get(f"/v1/jobs/{plan_set.job_id}/sheets", headers=bearer(stack)).json()
    for c, s, p in zip(canvases, sheets["sheets"], plan_set.pages, strict=True):
        assert c["label"]["none"][0].startswith(s["number"] + " · "), (c["label"], s)
        assert (c["width"], c["height"]) == (p.width_px, p.height_px)
    assert doc["items"][0]["label"] == {"none": ["100-00 · Site plan & roof plan"]}
    assert [r["label"]["en"][0] for r in doc["structures"]][0] == "Architectural"

    ids = fetched_ids(doc)
    caps = {re.search(r"/cap/([^/]+)/|\?cap=([^&]+)", i).group(1, 2) for i in ids}
    assert len({a or b for a, b in caps}) == 1, "one link for the whole manifest"
    kinds = {"info": 0, "thumbnail": 0, "words": 0, "callouts": 0, "search": 0, "download": 0}
    with httpx.Client(timeout=60) as anonymous:  # no header at all
        for url in sorted(set(ids)):
            path = urlsplit(url).path
            if re.search(r"/iiif/3/cap/[^/]+/[0-9a-f]{22}-\d+$", path):
                r, kind = anonymous.get(url + "/info.json"), "info"
                assert r.json()["id"] == url and r.json()["width"] > 0
            elif path.endswith("/default.jpg"):
                continue  # the full image of each page: its info.json above stands for it
            elif "/search" in path:
                r, kind = anonymous.get(url, params={"q": "roof plan"}), "search"
            elif path.endswith("/download"):
                r, kind = anonymous.head(url), "download"
            else:
                r = anonymous.get(url)
                kind = next(k for k in ("thumbnail", "words", "callouts") if k in path)
            assert r.status_code == 200, (url, r.status_code, r.text[:300])
            kinds[kind] += 1
    with_callouts = sum(1 for s in sheets["sheets"] if s["references"])
    assert with_callouts >= 5  # the plans' section bubbles (test_sheets)
    assert kinds == {"info": 8, "thumbnail": 8, "words": 8, "callouts": with_callouts,
                     "search": 2, "download": 1}, kinds
    # The full image of one page, as a viewer without deep zoom would ask.
    (painting,) = canvases[0]["items"][0]["items"]
    image = httpx.get(painting["body"]["id"], timeout=60)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


def test_the_cap_form_opens_with_no_header(stack, http, plan_set):
    cap = http.get(f"/v1/jobs/{plan_set.job_id}/links", headers=bearer(stack)).json()["cap"]
    url = f"/iiif/3/cap/{cap}/jobs/{plan_set.job_id}/manifest"
    resp = http.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"].startswith("public")
    doc = resp.json()
    assert len(doc["items"]) == 8 and doc["service"][0]["id"].startswith(
        f"{stack.gateway_url}/iiif/3/cap/{cap}/")
    again = http.get(url, headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304
    # Gzipped for a client that accepts it (this one is small: it is not).
    assert http.get(url, headers={"Accept-Encoding": "identity"}).json() == doc
    assert_problem(http.get(f"/iiif/3/cap/{cap[:-3]}xyz/jobs/{plan_set.job_id}/manifest"),
                   401, "BAD_LINK")


def test_another_orgs_job_or_plan_is_not_found(stack, http, plan_set):
    url = f"/iiif/3/jobs/{plan_set.job_id}/manifest"
    assert_problem(http.get(url), 401)
    theirs = assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 404)
    unknown = assert_problem(http.get("/iiif/3/jobs/" + "f" * 22 + "/manifest",
                                      headers=bearer(stack)), 404)
    assert theirs["reason"] == unknown["reason"]
    # A link of this job opens no other job.
    other = http.get("/iiif/3/jobs/" + "e" * 22 + "/manifest", headers=bearer(stack))
    assert other.status_code == 404
    cap = http.get(f"/v1/jobs/{plan_set.job_id}/links", headers=bearer(stack)).json()["cap"]
    assert_problem(http.get(f"/iiif/3/cap/{cap}/jobs/{'e' * 22}/manifest"), 404)
    assert_problem(http.get(f"/iiif/3/cap/{cap}/jobs/{'e' * 22}/search?q=roof"), 404)
    plan_url = "/iiif/3/plans/acme/iiif/crayfishinn/manifest"
    assert_problem(http.get(plan_url, headers=bearer(stack, org="intruder")), 404)
    assert_problem(http.get("/iiif/3/plans/acme/iiif/nosuchplan/manifest",
                            headers=bearer(stack)), 404)


def test_a_plans_manifest_is_its_current_set(stack, http, plan_set):
    url = "/iiif/3/plans/acme/iiif/crayfishinn/manifest"
    doc = http.get(url, headers=bearer(stack)).json()
    assert doc["id"] == stack.gateway_url + url
    assert doc["items"][0]["id"].endswith(f"/jobs/{plan_set.job_id}/canvas/1")
    assert len(doc["items"]) == 8


def test_search_hits_lie_inside_their_canvas(stack, http, plan_set):
    doc = http.get(f"/iiif/3/jobs/{plan_set.job_id}/manifest", headers=bearer(stack)).json()
    sizes = {c["id"]: (c["width"], c["height"]) for c in doc["items"]}
    search2, search1 = doc["service"]
    with httpx.Client(timeout=60) as anonymous:
        page = anonymous.get(search2["id"], params={"q": "roof plan", "user": "x"}).json()
        old = anonymous.get(search1["@id"], params={"q": "roof plan"}).json()
        assert page["type"] == "AnnotationPage" and page["ignored"] == ["user"]
        assert page["items"], page
        for anno in page["items"]:
            assert anno["motivation"] == "highlighting"
            assert anno["body"]["value"].upper().startswith("ROOF PLAN")
            canvas, xywh = anno["target"].split("#xywh=")
            x, y, w, h = map(int, xywh.split(","))
            width, height = sizes[canvas]
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= width and y + h <= height
        assert any(a["target"].startswith(doc["items"][0]["id"] + "#") for a in page["items"])
        assert [r["on"] for r in old["resources"]] == [a["target"] for a in page["items"]]
        assert old["within"]["total"] == len(page["items"])
        nothing = anonymous.get(search2["id"], params={"q": "zzzqqq"}).json()
        assert nothing["items"] == []
        none = anonymous.get(search2["id"], params={"q": "roof", "motivation": "painting"})
        assert none.json()["items"] == []
        assert_problem(anonymous.get(search2["id"]), 400, "BAD_QUERY")
        assert_problem(anonymous.get(search2["id"], params={"q": " *\""}), 400, "BAD_QUERY")
    # The bearer form of the same search.
    hits = http.get(f"/iiif/3/jobs/{plan_set.job_id}/search", params={"q": "roof plan"},
                    headers=bearer(stack)).json()["items"]
    assert [a["target"] for a in hits] == [a["target"] for a in page["items"]]
