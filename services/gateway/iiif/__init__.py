"""IIIF on the gateway (https://iiif.io/api/): the Image API 3.0 for every
page and image (:mod:`.image`), Presentation API 3.0 manifests with the
Content Search API 2.0 (:mod:`.presentation`), under ``/iiif/3``.

Identifiers: a page's image is ``{job_id}-{page}`` (page 1-based). Every
route also answers under ``/iiif/3/cap/{link}/…``, where ``{link}`` is a
signed link of the job (GET /v1/jobs/{id}/links): IIIF clients build URLs
by appending to a service's id and cannot send a header, so a manifest
fetched with a bearer token names ids that carry the link in their path.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.iiif import image, presentation

router = APIRouter(prefix="/iiif/3", tags=["iiif"])
router.include_router(image.router)
router.include_router(presentation.router)
