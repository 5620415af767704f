"""The IIIF Image API 3.0 at compliance level 2 for every still page
(https://iiif.io/api/image/3.0/): each page of a PDF, each photo, scan or
RAW file is an image service cut from its stored DZI pyramid
(:mod:`.cut`), under ``/iiif/3``:

- ``GET /iiif/3/{id}``: 303 to ``{id}/info.json`` (section 2);
- ``GET /iiif/3/{id}/info.json``: the image information (section 5),
  JSON-LD (``application/json`` when the Accept header asks for it);
- ``GET /iiif/3/{id}/{region}/{size}/{rotation}/{quality}.{format}``: an
  image (section 4; the arithmetic in :mod:`planzoom.iiif`).

``{id}`` is ``{job_id}-{page}`` (page 1-based). The same routes answer
under ``/iiif/3/cap/{link}/…`` with ``{link}`` a signed link of the job
(``GET /v1/jobs/{id}/links``, ``cap``): IIIF clients build URLs by
appending to a service's id and send no headers. Access answers as the
DZI tile routes do (:mod:`services.gateway.tiles`): a bearer token
(viewer) or ``?cap=`` on the plain form, another org's job the same 404
as an unknown one, ``Cache-Control`` private for a bearer token and public
only where the URL is the grant. info.json's ``id`` is the base of the URL
the request came through (the cap form when a link was the grant), built
from the request's scheme and Host as the gateway's other links are.
Every answer carries ``Link: <…level2.json>;rel="profile"``; an image
also its canonical URL (``rel="canonical"``, section 4.8). Errors are RFC
9457 problem documents (reasons ``IIIF_*``, docs/reasons.md).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.convertors import Convertor, register_url_convertor

from planzoom import iiif
from planzoom.config import Settings
from planzoom.dzi import DziInfo
from planzoom.errors import NotFound
from planzoom.storage import ObjectNotFound
from services.gateway.iiif.cut import (
    Page,
    Pages,
    Regions,
    cut,
    missing_page,
    tile,
)
from services.gateway.tiles import CONTENT_TYPES, cache_control, digest, job_place
from services.gateway.upstream import JobPlace

router = APIRouter()

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
JSON_LD = f'application/ld+json;profile="{CONTEXT}"'
#: What info.json lists beyond level 2's own (and, for clients that do not
#: read profiles, level 2's too).
EXTRA_FEATURES = ["baseUriRedirect", "canonicalLinkHeader", "cors", "jsonldMediaType",
                  "mirroring", "profileLinkHeader", "regionByPct", "regionByPx",
                  "regionSquare", "rotationBy90s", "sizeByConfinedWh", "sizeByH", "sizeByPct",
                  "sizeByW", "sizeByWh", "sizeUpscaling"]
#: info.json's ``sizes``: whole-image sizes of pyramid levels whose longer
#: side is within these pixels.
SIZES_PX = (64, 2048)
IMAGE_ID = re.compile(r"([0-9a-f]{22})-([1-9][0-9]{0,5})")


class ImageIdConvertor(Convertor):
    """A page's image id in a path, ``{job_id}-{page}``: a path that does
    not hold one is not an image route (404, as the spec asks of an
    unknown identifier), and leaves other ``/iiif/3`` routes free."""

    regex = IMAGE_ID.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("iiif_image", ImageIdConvertor())


class NoImageService(NotFound):
    reason = "NO_IMAGE_SERVICE"


class Iiif:
    """What the Image API keeps per gateway (``Gateway.iiif``): its
    limits (``PLANZOOM_IIIF_*``), its region slots and the pages' descriptors."""

    def __init__(self, settings: Settings):
        self.limits = iiif.Limits(settings.iiif_max_width, settings.iiif_max_height,
                                  settings.iiif_max_area)
        #: The most level pixels one cut decodes (twice ``maxArea``).
        self.canvas_pixels = 2 * settings.iiif_max_area
        self.quality = settings.iiif_quality  # JPEG and WebP quality of cut images
        self.regions = Regions(settings.iiif_max_concurrent_regions,
                               settings.iiif_max_waiting_regions,
                               settings.iiif_region_wait_seconds)
        self.pages = Pages()


async def _open(request: Request, ident: str, link: str | None
                ) -> tuple[JobPlace, Page, str]:
    """The page behind image id ``ident`` if the request may read it: its
    job's place, its pyramid, and the service's id (URL). Raises
    Unauthenticated (401), NotFound (404: another org's job, a page not
    done, a video's page) or ResourceExhausted (429)."""
    gw = request.app.state.gateway
    job_id, page_no = IMAGE_ID.fullmatch(ident).groups()
    place = await job_place(request, job_id, link)
    base = str(request.base_url).rstrip("/") + "/iiif/3"
    if request.state.via_link:
        base += f"/cap/{link or request.query_params['cap']}"
    page = await gw.iiif.pages.page(gw, place.tiles_prefix, place.archive, int(page_no))
    if page is None:
        try:
            await gw.reader.get_if_changed(place.preview_prefix + "master.m3u8", None)
        except ObjectNotFound:
            raise missing_page(int(page_no)) from None
        raise NoImageService(f"{ident} is a video's page: videos have no IIIF image service "
                             f"(their preview is /v1/jobs/{job_id}/video/master.m3u8)")
    return place, page, f"{base}/{ident}"


def _headers(request: Request, etag: str, link: str = PROFILE_LINK) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": cache_control(request), "Link": link}


def info(dzi: DziInfo, service_id: str, limits: iiif.Limits) -> dict:
    """info.json (Image API 3.0, section 5) of a page with pyramid ``dzi``:
    its full-resolution ``width`` and ``height`` (pixels), ``tiles`` of the
    pyramid's tile size at a scale factor per level (so a tile request is
    one stored tile's pixels), ``sizes`` of the pyramid's small levels, and
    the limits (pixels)."""
    sizes = []
    for level in range(dzi.levels):
        w, h = dzi.level_size(level)
        if SIZES_PX[0] <= max(w, h) <= SIZES_PX[1] and iiif.fit(w, h, limits) == (w, h):
            sizes.append({"width": w, "height": h})
    return {
        "@context": CONTEXT, "id": service_id, "type": "ImageService3",
        "protocol": "http://iiif.io/api/image", "profile": "level2",
        "width": dzi.width, "height": dzi.height,
        "maxWidth": limits.max_width, "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "sizes": sizes,
        "tiles": [{"width": dzi.tile_size, "height": dzi.tile_size,
                   "scaleFactors": [2**k for k in range(dzi.levels)]}],
        "extraFormats": ["webp"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": EXTRA_FEATURES,
    }


async def _base(request: Request, ident: str, link: str | None) -> Response:
    _, _, service_id = await _open(request, ident, link)
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{service_id}/info.json{query}", status_code=303,
                            headers={"Cache-Control": cache_control(request),
                                     "Link": PROFILE_LINK})


async def _info(request: Request, ident: str, link: str | None) -> Response:
    place, page, service_id = await _open(request, ident, link)
    accept = request.headers.get("accept", "")
    plain = "application/json" in accept and "application/ld+json" not in accept
    body = info(page.dzi, service_id, request.app.state.gateway.iiif.limits)
    etag = digest(place.tiles_prefix, ident, body, plain)
    headers = {**_headers(request, etag), "Vary": "Accept"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers,
                        media_type="application/json" if plain else JSON_LD)


async def _image(request: Request, ident: str, region: str, size: str, rotation: str,
                 quality_format: str, link: str | None) -> Response:
    gw = request.app.state.gateway
    place, page, service_id = await _open(request, ident, link)  # 401 and 404 first
    wanted = iiif.parse(region, size, rotation, quality_format)
    state = gw.iiif
    limits = state.limits
    plan = iiif.resolve(wanted, page.dzi.width, page.dzi.height, limits)
    canonical = iiif.canonical(plan, limits)
    etag = digest(place.tiles_prefix, ident, canonical, state.quality)
    headers = _headers(request, etag, f'<{service_id}/{canonical}>;rel="canonical", '
                                      + PROFILE_LINK)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    src = iiif.source(page.dzi, plan, state.canvas_pixels)
    stored = iiif.stored_tile(page.dzi, plan, src)
    if stored and wanted.format == page.dzi.format and wanted.quality in ("default", "color") \
            and not wanted.mirror and not wanted.rotation:
        data = await tile(gw, page, src.level, *stored)
    else:
        data = await cut(gw, page, src, plan, state.regions, state.quality, place.org)
    return Response(data, media_type=CONTENT_TYPES[wanted.format], headers=headers)


ID = "{ident:iiif_image}"
CAP = "/cap/{link}"
REQUEST = "{region}/{size}/{rotation}/{quality_format}"
METHODS = ["GET", "HEAD"]  # HEAD: recommended by section 7


@router.api_route(f"/{ID}", methods=METHODS,
                  summary="An image service's base URI: 303 to its info.json",
                  status_code=303)
async def image_base(request: Request, ident: str) -> Response:
    """303 to ``…/{ident}/info.json`` (Image API 3.0, section 2,
    ``baseUriRedirect``). ``ident`` is ``{job_id}-{page}``. Bearer token
    (viewer) or ``?cap=``; 401 without, 404 for an unknown image or one of
    another org's job."""
    return await _base(request, ident, None)


@router.api_route(f"{CAP}/{ID}", methods=METHODS,
                  summary="An image service's base URI (signed link in the path)",
                  status_code=303)
async def image_base_cap(request: Request, link: str, ident: str) -> Response:
    """As ``GET /iiif/3/{ident}``, the grant being ``link``, a signed link
    of the image's job (``GET /v1/jobs/{id}/links``, ``cap``); 401 for a
    bad or expired link, 404 for another job's image."""
    return await _base(request, ident, link)


@router.api_route(f"/{ID}/info.json", methods=METHODS,
                  summary="An image's IIIF information (info.json)")
async def image_info(request: Request, ident: str) -> Response:
    """The image information of page ``{page}`` of job ``{job_id}``
    (``ident`` = ``{job_id}-{page}``; Image API 3.0, section 5): ``width``
    and ``height`` in full-resolution pixels, ``tiles`` (the stored
    pyramid's tile size, a scale factor per level), ``sizes``, ``maxWidth``,
    ``maxHeight``, ``maxArea`` (``PLANZOOM_IIIF_MAX_*``), extra formats,
    qualities and features. ``application/ld+json`` with the Image API 3
    context as profile, or ``application/json`` when Accept names only
    that. 404 while the page is not done, for a video's page
    (``NO_IMAGE_SERVICE``), an unknown image or another org's; 401 without
    credentials."""
    return await _info(request, ident, None)


@router.api_route(f"{CAP}/{ID}/info.json", methods=METHODS,
                  summary="An image's info.json (signed link in the path)")
async def image_info_cap(request: Request, link: str, ident: str) -> Response:
    """As ``GET /iiif/3/{ident}/info.json`` with ``link`` as the grant; its
    ``id`` is the cap form's URL, so a client that appends to it keeps the
    link."""
    return await _info(request, ident, link)


@router.api_route(f"/{ID}/{REQUEST}", methods=METHODS,
                  summary="A region of an image (IIIF image request)")
async def image_request(request: Request, ident: str, region: str, size: str, rotation: str,
                        quality_format: str) -> Response:
    """An image cut from the page's stored pyramid (Image API 3.0, section
    4): ``region`` ``full``, ``square``, ``x,y,w,h`` (full-resolution
    pixels) or ``pct:x,y,w,h``; ``size`` ``max``, ``w,``, ``,h``,
    ``pct:n``, ``w,h``, ``!w,h``, each also with ``^`` (upscaling, up to
    the limits); ``rotation`` 0, 90, 180 or 270, ``!`` before it to mirror
    first; quality ``default``, ``color``, ``gray`` or ``bitonal``; format
    ``jpg``, ``png`` or ``webp``. 400 for a parameter out of the syntax or
    not supported (``IIIF_BAD_REQUEST``), a region or size of no pixels
    (``IIIF_EMPTY``), a size over the region without ``^``
    (``IIIF_UPSCALE``), over ``maxWidth``/``maxHeight``/``maxArea``
    (``IIIF_TOO_LARGE``); 404 as for info.json; 503 ``REGIONS_BUSY`` with
    ``Retry-After`` when the gateway is cutting all it may."""
    return await _image(request, ident, region, size, rotation, quality_format, None)


@router.api_route(f"{CAP}/{ID}/{REQUEST}", methods=METHODS,
                  summary="A region of an image (signed link in the path)")
async def image_request_cap(request: Request, link: str, ident: str, region: str, size: str,
                            rotation: str, quality_format: str) -> Response:
    """As ``GET /iiif/3/{ident}/{region}/{size}/{rotation}/{quality}.{format}``
    with ``link`` as the grant (``Cache-Control: public``: the URL is the
    grant)."""
    return await _image(request, ident, region, size, rotation, quality_format, link)
