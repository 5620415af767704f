"""IIIF manifests and Content Search answers built from job records, without
the stack: each validates with iiif-prezi3's Presentation 3.0 model (made
from the IIIF JSON schema); canvas labels as the viewer's strip shows them,
a Range per discipline, callouts as linking annotations, pages not done,
video canvases, the ids that carry the link, and search matches boxed on
their canvas."""

from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

import pydantic
import pytest
from iiif_prezi3 import AnnotationPage, Manifest

from planzoom import search
from planzoom.v1 import jobs_pb2
from services.gateway.iiif import manifest as build
from services.gateway.iiif.search import matches, search1, search2

JOB = "0123456789abcdef012345"
BASE = "http://gw.test:8080"
CAP = "eyJqIjoiMDEyMyJ9.Zx1-ab_c"
URLS = build.Urls(BASE, JOB, CAP)


def pdf_job(states=(jobs_pb2.PAGE_STATE_DONE,) * 4, state=jobs_pb2.JOB_STATE_COMPLETE):
    """A PDF job of len(states) A1 pages at 100 DPI, each with a thumbnail
    and an overview."""
    job = jobs_pb2.Job(job_id=JOB, state=state, source_kind="pdf", source_name="tower set.pdf",
                       plan=jobs_pb2.PlanRef(org="acme", project="tower", plan="core"),
                       total_pages=len(states),
                       completed_pages=sum(s == jobs_pb2.PAGE_STATE_DONE for s in states))
    for n, s in enumerate(states, 1):
        page = job.pages.add(page=n, state=s, width_pt=2384, height_pt=1684, dpi=100,
                             width_px=3311, height_px=2339)
        page.variants.add(name="thumbnail", format="jpg", width=300, height=212)
        page.variants.add(name="overview", format="jpg", width=1024, height=723, level=11)
        if s == jobs_pb2.PAGE_STATE_FAILED:
            page.error = "the page's content stream is damaged"
    return job


INDEX = {"job_id": JOB, "sheets": [
    {"page": 1, "number": "A-101", "title": "GROUND FLOOR PLAN", "discipline": "architectural",
     "references": [{"number": "S-201", "page": 3, "text": "3/S-201", "box": [410, 520, 60, 48]},
                    {"number": "A-102", "page": 2, "text": "SEE A-102", "box": [90, 80, 120, 20]}]},
    {"page": 2, "number": "A-102", "title": "Second floor plan", "discipline": "architectural",
     "references": []},
    {"page": 3, "number": "S-201", "title": "SECTIONS", "discipline": "structural",
     "references": []},
    {"page": 4, "number": None, "title": "COVER", "discipline": None, "references": []},
]}


def strict(node, path="") -> None:
    """What iiif-prezi3 lets through: every object with a ``type`` but a
    TextualBody or a search-1.0 entry has an http(s) ``id``; every label,
    summary and metadata value is a language map of lists of strings; sizes
    are positive integers."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            strict(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if "type" in node and node["type"] not in ("TextualBody", "TextQuoteSelector",
                                               "SpecificResource"):
        assert urlsplit(node.get("id", "")).scheme in ("http", "https"), path
    for key in ("label", "summary", "value"):
        if key in node and node.get("type") != "TextualBody":
            assert isinstance(node[key], dict) and node[key], (path, key)
            assert all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                       for v in node[key].values()), (path, key)
    for key in ("width", "height"):
        if key in node:
            assert isinstance(node[key], int) and node[key] > 0, (path, key)
    for key, value in node.items():
        strict(value, f"{path}.{key}")


def valid(doc: dict) -> Manifest:
    strict(doc)
    return Manifest(**copy.deepcopy(doc))


def canvases(doc: dict) -> dict[int, dict]:
    return {int(c["id"].rsplit("/", 1)[1]): c for c in doc["items"]}


def test_a_complete_set_validates_and_its_canvases_are_its_pages():
    doc = build.manifest(pdf_job(), INDEX, URLS)
    valid(doc)
    assert doc["id"] == f"{BASE}/iiif/3/jobs/{JOB}/manifest"
    assert doc["label"] == {"none": ["core · tower set.pdf"]}
    c = canvases(doc)
    assert list(c) == [1, 2, 3, 4]
    assert (c[1]["width"], c[1]["height"]) == (3311, 2339)
    # As the viewer's strip: capitals in sentence case, mixed case as printed,
    # "Page N" where there is no number.
    assert [c[n]["label"]["none"][0] for n in c] == [
        "A-101 · Ground floor plan", "A-102 · Second floor plan", "S-201 · Sections",
        "Page 4 · Cover"]


def test_the_validator_refuses_what_the_spec_does():
    """The model check can fail: a canvas of another type, an id that is not
    a URI, a painting annotation with no target, a language map whose values
    are not lists. (iiif-prezi3 is a builder: it fills in missing ids and
    turns plain strings into language maps, so :func:`strict` checks those.)"""
    doc = build.manifest(pdf_job(), INDEX, URLS)
    for spoil in (lambda d: d["items"][1].__setitem__("type", "Page"),
                  lambda d: d["items"][1].__setitem__("id", "canvas 2"),
                  lambda d: d["items"][1]["items"][0]["items"][0].pop("target"),
                  lambda d: d["items"][0].__setitem__("label", {"none": "A-101"})):
        broken = copy.deepcopy(doc)
        spoil(broken)
        with pytest.raises(pydantic.ValidationError):
            Manifest(**broken)
    for spoil in (lambda d: d["items"][0].__setitem__("label", "A-101"),
                  lambda d: d["items"][1].pop("id"),
                  lambda d: d["items"][1].__setitem__("width", "3311")):
        broken = copy.deepcopy(doc)
        spoil(broken)
        Manifest(**copy.deepcopy(broken))  # let through by the model ...
        with pytest.raises(AssertionError):
            strict(broken)  # ... not by the strict walk


def test_canvas_labels():
    assert build.canvas_label(7, None) == "Page 7"
    assert build.canvas_label(7, {"number": None, "title": None}) == "Page 7"
    assert build.canvas_label(2, {"number": "E-1", "title": None}) == "E-1"
    assert build.canvas_label(2, {"number": "E-1", "title": "Lighting Plan"}) == \
        "E-1 · Lighting Plan"
    assert build.canvas_label(2, {"number": "100-00", "title": "SITE PLAN & ROOF PLAN"}) == \
        "100-00 · Site plan & roof plan"


def test_a_range_per_discipline_in_the_order_the_set_shows_them():
    doc = build.manifest(pdf_job(), INDEX, URLS)
    ranges = doc["structures"]
    assert [r["label"]["en"][0] for r in ranges] == ["Architectural", "Structural",
                                                      "Other sheets"]
    assert [[i["id"].rsplit("/", 1)[1] for i in r["items"]] for r in ranges] == \
        [["1", "2"], ["3"], ["4"]]
    assert all(i["type"] == "Canvas" for r in ranges for i in r["items"])
    assert len({r["id"] for r in ranges}) == 3
    # Photos have no disciplines: no ranges at all.
    photos = pdf_job()
    photos.source_kind = "jpeg"
    assert "structures" not in build.manifest(photos, None, URLS)


def test_callouts_are_linking_annotations_to_the_sheets_they_name():
    doc = build.manifest(pdf_job(), INDEX, URLS)
    c = canvases(doc)
    (page,) = c[1]["annotations"]
    assert page["type"] == "AnnotationPage"
    assert page["id"] == f"{BASE}/iiif/3/cap/{CAP}/jobs/{JOB}/callouts/1"
    first, second = page["items"]
    assert first["motivation"] == "linking"
    assert first["target"] == f"{c[1]['id']}#xywh=410,520,60,48"
    sheet, text = first["body"]
    assert sheet == {"id": c[3]["id"], "type": "Canvas", "label": {"none": ["S-201 · Sections"]}}
    assert text == {"type": "TextualBody", "value": "3/S-201 → S-201 · Sections",
                    "format": "text/plain", "purpose": "describing"}
    assert second["body"][0]["id"] == c[2]["id"]
    assert all("annotations" not in c[n] for n in (2, 3, 4))
    # Without sheets.json (a running job) the record's sheets label the
    # canvases, and there are no callouts.
    job = pdf_job()
    job.pages[0].sheet.number, job.pages[0].sheet.title = "A-101", "GROUND FLOOR PLAN"
    doc = build.manifest(job, None, URLS)
    assert canvases(doc)[1]["label"] == {"none": ["A-101 · Ground floor plan"]}
    assert all("annotations" not in c for c in doc["items"])


def test_fetched_ids_carry_the_link_in_the_path_and_identifiers_are_stable():
    doc = build.manifest(pdf_job(), INDEX, URLS)
    c = canvases(doc)[2]
    (anno,) = c["items"][0]["items"]
    assert anno["motivation"] == "painting" and anno["target"] == c["id"]
    body = anno["body"]
    assert body["type"] == "Image" and (body["width"], body["height"]) == (3311, 2339)
    (service,) = body["service"]
    assert service == {"id": f"{BASE}/iiif/3/cap/{CAP}/{JOB}-2", "type": "ImageService3",
                       "profile": "level2"}
    assert body["id"] == f"{service['id']}/full/max/0/default.jpg"
    assert c["thumbnail"][0]["id"] == f"{BASE}/v1/jobs/{JOB}/pages/2.thumbnail.jpg?cap={CAP}"
    assert c["seeAlso"][0]["id"] == f"{BASE}/v1/jobs/{JOB}/pages/2/words?cap={CAP}"
    assert doc["rendering"][0]["id"] == f"{BASE}/v1/jobs/{JOB}/download?cap={CAP}"
    search2_service, search1_service = doc["service"]
    assert search2_service == {"id": f"{BASE}/iiif/3/cap/{CAP}/jobs/{JOB}/search",
                               "type": "SearchService2"}
    assert search1_service["profile"] == "http://iiif.io/api/search/1/search"
    # No IIIF service has its link in a query string; canvases and ranges
    # do not carry it at all (a new link must not rename them).
    for s in (service, search2_service):
        assert not urlsplit(s["id"]).query
    assert CAP not in c["id"] and all(CAP not in r["id"] for r in doc["structures"])


def test_pages_not_done_are_listed_with_their_planned_size():
    states = (jobs_pb2.PAGE_STATE_DONE, jobs_pb2.PAGE_STATE_RENDERING,
              jobs_pb2.PAGE_STATE_FAILED, jobs_pb2.PAGE_STATE_PENDING)
    job = pdf_job(states, jobs_pb2.JOB_STATE_PROCESSING)
    del job.pages[3].variants[:]  # its preview pass has not run yet
    doc = build.manifest(job, None, URLS)
    valid(doc)
    c = canvases(doc)
    assert len(c) == 4 and all((x["width"], x["height"]) == (3311, 2339) for x in c.values())
    # Rendering: its overview paints the canvas, no image service yet.
    (body,) = [a["body"] for a in c[2]["items"][0]["items"]]
    assert body["id"] == f"{BASE}/v1/jobs/{JOB}/pages/2.overview.jpg?cap={CAP}"
    assert (body["width"], body["height"]) == (1024, 723) and "service" not in body
    # Failed: nothing paints it; it says why.
    assert c[3]["items"][0]["items"] == []
    assert "damaged" in c[3]["summary"]["en"][0]
    # Pending with no preview: an empty canvas of the planned size.
    assert c[4]["items"][0]["items"] == [] and "thumbnail" not in c[4]
    # A running job has no search index and no zip yet.
    assert "service" not in doc and "rendering" not in doc
    assert all("seeAlso" not in c[n] for n in (2, 3, 4))


def test_a_video_is_a_canvas_with_a_duration_and_its_hls_rendition():
    job = jobs_pb2.Job(job_id=JOB, state=jobs_pb2.JOB_STATE_COMPLETE, source_kind="mp4",
                       source_name="pour.mp4", total_pages=1, completed_pages=1,
                       plan=jobs_pb2.PlanRef(org="acme", project="site", plan="pour"))
    page = job.pages.add(page=1, state=jobs_pb2.PAGE_STATE_DONE, width_px=1280, height_px=720)
    page.video.duration_seconds = 12.5
    page.video.thumbnail_key = "previews/acme/site/pour/x/thumbnail.jpg"
    doc = build.manifest(job, None, URLS)
    valid(doc)
    (c,) = doc["items"]
    assert c["duration"] == 12.5 and (c["width"], c["height"]) == (1280, 720)
    (anno,) = c["items"][0]["items"]
    assert anno["body"] == {"id": f"{BASE}/v1/jobs/{JOB}/video/master.m3u8?cap={CAP}",
                            "type": "Video", "format": "application/vnd.apple.mpegurl",
                            "width": 1280, "height": 720, "duration": 12.5}
    assert c["thumbnail"][0]["id"].endswith(f"/video/thumbnail.jpg?cap={CAP}")
    assert "structures" not in doc and "service" not in doc and "rendering" not in doc


def test_a_plan_manifest_takes_its_own_id():
    plan_id = f"{BASE}/iiif/3/plans/acme/tower/core/manifest"
    doc = build.manifest(pdf_job(), INDEX, URLS, manifest_id=plan_id)
    valid(doc)
    assert doc["id"] == plan_id
    assert doc["items"][0]["id"] == f"{BASE}/iiif/3/jobs/{JOB}/canvas/1"


def word(text, x, y=100, w=None, h=20):
    return [text, x, y, w or 12 * len(text), h, 10.0, 0]


@pytest.fixture
def index(tmp_path):
    path = str(tmp_path / "s.sqlite")
    line = [word("FIRE", 10), word("DAMPER", 70), word("AT", 160), word("FIRE", 200),
            word("DAMPERS,", 260)]
    other = [word("SEE", 10, 400), word("A-201", 60, 400)]
    search.build(path, [(1, {"words": line}, "M-101"), (3, {"words": other}, "M-102")])
    return path


def test_matches_are_boxed_with_their_context(index):
    (hit,) = search.query(index, "fire damp")
    assert matches(hit, search.terms("fire damp")) == [
        ("", "FIRE DAMPER", " AT FIRE DAMPERS", [10, 100, 132, 20]),
        ("FIRE DAMPER AT ", "FIRE DAMPERS", "", [200, 100, 156, 20])]
    (hit,) = search.query(index, "a-2")
    assert matches(hit, ["a-2"]) == [("SEE ", "A-201", "", [60, 400, 60, 20])]


def test_a_line_that_cannot_be_lined_up_is_one_match():
    hit = search.Hit(page=1, sheet=None, text="FIRE DAMPER", boxes=[[10, 100, 48, 20]])
    assert matches(hit, ["fire", "damp"]) == [("", "FIRE DAMPER", "", [10, 100, 48, 20])]


def test_content_search_2_and_1_answers(index):
    terms = search.terms("fire damp")
    hits = search.query(index, "fire damp")
    page_id = f"{BASE}/iiif/3/cap/{CAP}/jobs/{JOB}/search?q=fire+damp&user=x"
    doc = search2(page_id, URLS, hits, terms, ["user"])
    AnnotationPage(**{k: v for k, v in doc.items() if k not in ("@context", "ignored")})
    strict(doc)
    assert doc["ignored"] == ["user"] and doc["id"] == page_id
    first, second = doc["items"]
    canvas = f"{BASE}/iiif/3/jobs/{JOB}/canvas/1"
    assert first["motivation"] == "highlighting"
    assert first["target"] == f"{canvas}#xywh=10,100,132,20"
    assert first["body"] == {"type": "TextualBody", "value": "FIRE DAMPER",
                             "format": "text/plain"}
    assert second["target"] == f"{canvas}#xywh=200,100,156,20"
    (context,) = doc["annotations"]
    assert [a["motivation"] for a in context["items"]] == ["contextualizing"] * 2
    assert context["items"][1]["target"]["source"] == second["id"]
    assert context["items"][1]["target"]["selector"] == [
        {"type": "TextQuoteSelector", "exact": "FIRE DAMPERS", "prefix": "FIRE DAMPER AT "}]
    assert len({a["id"] for a in doc["items"] + context["items"]}) == 4
    old = search1(page_id, URLS, hits, terms, [])
    assert old["within"]["total"] == 2 and "ignored" not in old["within"]
    assert [r["on"] for r in old["resources"]] == [first["target"], second["target"]]
    assert old["hits"][1] == {"@type": "search:Hit", "annotations": [second["id"]],
                              "match": "FIRE DAMPERS", "before": "FIRE DAMPER AT ", "after": ""}
    json.dumps(doc), json.dumps(old)
    # Nothing found: an empty page, still valid.
    empty = search2(page_id, URLS, [], terms, [])
    assert empty["items"] == [] and "annotations" not in empty
