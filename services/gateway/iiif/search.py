"""Search inside a job's sheets as IIIF Content Search: version 2.0
(https://iiif.io/api/search/2.0/, ``SearchService2``) at
``…/jobs/{job_id}/search?q=``, and the same search as version 1.0
(https://iiif.io/api/search/1.0/) at ``…/jobs/{job_id}/search/1?q=`` for
viewers that read only 1.0 (Mirador 4), each also under
``/iiif/3/cap/{link}/…`` for clients that send no header.

It is the gateway's own search (``GET /v1/search``: the job's SQLite FTS5
index, :mod:`planzoom.search`, fetched by
:class:`services.gateway.sheet_routes.SearchIndexes`): case- and
accent-insensitive, every term a word prefix, several terms a phrase
within a line. A match is one annotation: its target the union of the
matched words' boxes on the page's canvas (``#xywh=`` in full-resolution
pixels, the canvas's own coordinates), its body the matched words.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from planzoom import search
from services.gateway.iiif.manifest import Urls
from services.gateway.sheet_routes import BadQuery, search_index
from services.gateway.tiles import cache_scope, job_place

router = APIRouter()

SEARCH2_CONTEXT = "http://iiif.io/api/search/2/context.json"
SEARCH1_CONTEXT = ["http://iiif.io/api/presentation/2/context.json",
                   "http://iiif.io/api/search/1/context.json"]
#: Motivations a 2.0 request may ask for that this search's annotations have.
MOTIVATIONS = {"highlighting", "non-painting"}


def _folded(word: str) -> str:
    """A word as the index matches it (case and accents folded, trailing
    punctuation dropped); "" for one with no letter or digit."""
    try:
        folded = search.terms(word)
    except search.BadQuery:
        return ""
    return folded[0] if len(folded) == 1 else ""


def matches(hit: search.Hit, terms: list[str]) -> list[tuple[str, str, str, list[int]]]:
    """The matches in one hit's line: ``(prefix, exact, suffix, [x, y, w,
    h])``, the box the union of the matched words' boxes. A line whose
    words cannot be lined up with its boxes is one match, the whole line."""
    words, n = hit.text.split(" "), len(terms)
    folded = [_folded(w) for w in words]
    starts = [i for i in range(len(words) - n + 1)
              if all(folded[i + k] == terms[k] for k in range(n - 1))
              and folded[i + n - 1].startswith(terms[-1])]
    groups = [(i, hit.boxes[k * n:(k + 1) * n]) for k, i in enumerate(starts)]
    if not starts or len(starts) * n != len(hit.boxes):
        groups, n = [(0, hit.boxes)], len(words)
    out = []
    for i, boxes in groups:
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        before, after = " ".join(words[:i]), " ".join(words[i + n:])
        out.append((before + " " if before else "", " ".join(words[i:i + n]),
                    " " + after if after else "", [x0, y0, x1 - x0, y1 - y0]))
    return out


def _annotations(urls: Urls, hits: list[search.Hit], terms: list[str]):
    """(annotation id, canvas#xywh, prefix, exact, suffix) per match."""
    for hit in hits:
        canvas = urls.canvas(hit.page)
        for prefix, exact, suffix, (x, y, w, h) in matches(hit, terms):
            xywh = f"xywh={x},{y},{w},{h}"
            yield f"{canvas}/words/{xywh[5:]}", f"{canvas}#{xywh}", prefix, exact, suffix


def search2(page_id: str, urls: Urls, hits: list[search.Hit], terms: list[str],
            ignored: list[str]) -> dict:
    """A Content Search 2.0 response (its section 4.2, with 4.3.1's match
    context): ``items``, one ``highlighting`` annotation per match whose
    body is the matched text; ``annotations``, a ``contextualizing``
    annotation per match with the line's text before and after it."""
    items, context = [], []
    for k, (aid, target, prefix, exact, suffix) in enumerate(_annotations(urls, hits, terms)):
        items.append({"id": aid, "type": "Annotation", "motivation": "highlighting",
                      "body": {"type": "TextualBody", "value": exact, "format": "text/plain"},
                      "target": target})
        selector = {"type": "TextQuoteSelector", "exact": exact}
        if prefix:
            selector["prefix"] = prefix
        if suffix:
            selector["suffix"] = suffix
        context.append({"id": f"{page_id}#match-{k}", "type": "Annotation",
                        "motivation": "contextualizing",
                        "target": {"type": "SpecificResource", "source": aid,
                                   "selector": [selector]}})
    out = {"@context": SEARCH2_CONTEXT, "id": page_id, "type": "AnnotationPage"}
    if ignored:
        out["ignored"] = ignored
    out["items"] = items
    if context:
        out["annotations"] = [{"id": f"{page_id}#context", "type": "AnnotationPage",
                               "items": context}]
    return out


def search1(list_id: str, urls: Urls, hits: list[search.Hit], terms: list[str],
            ignored: list[str]) -> dict:
    """A Content Search 1.0 response (its sections 3.3 and 3.4): an
    ``sc:AnnotationList`` of one annotation per match and its ``hits``
    with the text before and after it."""
    resources, found = [], []
    for aid, target, prefix, exact, suffix in _annotations(urls, hits, terms):
        resources.append({"@id": aid, "@type": "oa:Annotation", "motivation": "sc:painting",
                          "resource": {"@type": "cnt:ContentAsText", "chars": exact},
                          "on": target})
        found.append({"@type": "search:Hit", "annotations": [aid], "match": exact,
                      "before": prefix, "after": suffix})
    within = {"@type": "sc:Layer", "total": len(resources)}
    if ignored:
        within["ignored"] = ignored
    return {"@context": SEARCH1_CONTEXT, "@id": list_id, "@type": "sc:AnnotationList",
            "within": within, "resources": resources, "hits": found}


async def _search(request: Request, job_id: str, link: str | None,
                  q: str | None) -> tuple[Urls, list[search.Hit], list[str]]:
    place = await job_place(request, job_id, link)
    try:
        terms = search.terms(q or "")
    except search.BadQuery as e:
        raise BadQuery(f"{e} (q=…)") from None
    path = await search_index(request, job_id, place.tiles_prefix)
    hits = await asyncio.to_thread(search.query, path, q, search.MAX_HITS)
    return Urls(str(request.base_url).rstrip("/"), job_id, link or ""), hits, terms


def _answer(request: Request, doc: dict, profile: str) -> Response:
    return Response(json.dumps(doc, ensure_ascii=False, separators=(",", ":")),
                    media_type=f'application/ld+json;profile="{profile}"',
                    headers={"Cache-Control": f"{cache_scope(request)}, max-age=300"})


def _ignored(request: Request, implemented: set[str]) -> list[str]:
    return [p for p in ("motivation", "date", "user")
            if p in request.query_params and p not in implemented]


async def _search2(request: Request, job_id: str, link: str | None, q: str | None,
                   motivation: str | None) -> Response:
    urls, hits, terms = await _search(request, job_id, link, q)
    if motivation and not set(motivation.split()) & MOTIVATIONS:
        hits = []  # none of this search's annotations has the motivation asked for
    doc = search2(str(request.url), urls, hits, terms, _ignored(request, {"motivation"}))
    return _answer(request, doc, SEARCH2_CONTEXT)


async def _search1(request: Request, job_id: str, link: str | None, q: str | None) -> Response:
    urls, hits, terms = await _search(request, job_id, link, q)
    doc = search1(str(request.url), urls, hits, terms, _ignored(request, set()))
    return _answer(request, doc, SEARCH1_CONTEXT[1])


Q = Annotated[str | None, Query(description="words to find (each a word prefix; several "
                                            "words a phrase within a line)")]


@router.get("/jobs/{job_id}/search", summary="IIIF Content Search 2.0 in a job's sheets")
async def search2_route(request: Request, job_id: str, q: Q = None,
                        motivation: str | None = None) -> Response:
    """An AnnotationPage (Content Search 2.0 section 4.2): ``items``, one
    annotation per match, motivation ``highlighting``, target ``{canvas
    id}#xywh=x,y,w,h`` (full-resolution pixels), body a TextualBody with the
    matched text; ``annotations``, one ``contextualizing`` annotation per
    match with a TextQuoteSelector (``prefix``, ``exact``, ``suffix``: the
    rest of its line). At most planzoom.search.MAX_HITS (500) lines, in page
    order, in one page. ``motivation`` is honoured (``highlighting``,
    ``non-painting``; anything else finds nothing); ``date`` and ``user``
    are ignored and listed in ``ignored``. Bearer (viewer). 400 (BAD_QUERY)
    for no ``q``, one with no letter or digit, or one over 200 characters;
    404 for a job the caller cannot see or one with no index (SHEETS_NOT_READY:
    not a PDF, or not ended)."""
    return await _search2(request, job_id, None, q, motivation)


@router.get("/cap/{link}/jobs/{job_id}/search",
            summary="IIIF Content Search 2.0 in a job's sheets, with a signed link")
async def search2_cap_route(request: Request, link: str, job_id: str, q: Q = None,
                            motivation: str | None = None) -> Response:
    """As ``GET /iiif/3/jobs/{job_id}/search``, the job's signed link in
    the path (no header needed): 401 when it is not valid or has expired."""
    return await _search2(request, job_id, link, q, motivation)


@router.get("/jobs/{job_id}/search/1", summary="IIIF Content Search 1.0 in a job's sheets")
async def search1_route(request: Request, job_id: str, q: Q = None) -> Response:
    """An ``sc:AnnotationList`` (Content Search 1.0 sections 3.3-3.4): one
    ``oa:Annotation`` per match (``on``: ``{canvas id}#xywh=``; ``resource``:
    the matched text), ``hits`` with the text ``before`` and ``after`` it,
    ``within.total``. ``motivation``, ``date`` and ``user`` are ignored and
    listed in ``within.ignored``. Errors as the 2.0 route's."""
    return await _search1(request, job_id, None, q)


@router.get("/cap/{link}/jobs/{job_id}/search/1",
            summary="IIIF Content Search 1.0 in a job's sheets, with a signed link")
async def search1_cap_route(request: Request, link: str, job_id: str,
                            q: Q = None) -> Response:
    """As ``GET /iiif/3/jobs/{job_id}/search/1``, the link in the path."""
    return await _search1(request, job_id, link, q)

