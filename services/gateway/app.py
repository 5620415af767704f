"""The gateway's application and process: :func:`create_app` builds the
FastAPI app (routes, RFC 9457 errors, CORS, body limit, health), :func:`run`
serves it with uvicorn on ``PLANZOOM_GATEWAY_ADDR`` until SIGTERM.

The OpenAPI document is at ``/openapi.json``, its reading at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from planzoom import tracing
from planzoom.config import Settings, get_settings
from planzoom.metrics import serve_metrics
from planzoom.server import service_process
from planzoom.slots import Slots
from planzoom.storage import ObjectStore
from planzoom.store_reader import AsyncReader
from services.gateway import (
    downloads,
    iiif,
    job_routes,
    problems,
    revision_routes,
    sheet_routes,
    tiles,
    upload_routes,
    uploads,
    viewer,
    webhooks,
)
from services.gateway.access import Gatekeeper
from services.gateway.archives import Archives
from services.gateway.bus import Bus
from services.gateway.iiif.image import Iiif
from services.gateway.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """What the routes share (``request.app.state.gateway``)."""

    settings: Settings
    gatekeeper: Gatekeeper
    upstream: Upstream
    store: ObjectStore
    reader: AsyncReader  # tiles' and descriptors' reads, on the event loop
    bus: Bus
    uploads: uploads.Uploads
    webhooks: webhooks.Webhooks
    archives: Archives
    searches: sheet_routes.SearchIndexes  # jobs' search indexes, on local disk
    zips: Slots  # zip downloads listed or sent at once
    iiif: Iiif  # the IIIF Image API's limits, region slots and pages' descriptors


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with
    413 (by its Content-Length before it is read, or as soon as a chunked
    body passes the limit). Paths under ``exempt`` (tus uploads, which
    bound their bodies by Upload-Length) pass as they are."""

    def __init__(self, app, limit: int, exempt: str = "/v1/uploads"):
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body (a GET)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        request = Request(scope, receive)
        response = problems.respond(request, problems.Problem(
            413, f"the request body is over {self.limit:,} bytes", "BODY_TOO_LARGE"))
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway's FastAPI application for ``settings`` (default: from
    the environment). Its lifespan opens the gRPC channels, the NATS
    connection and the bucket client, runs the sweep for expired uploads
    and the webhook workers, and closes them at shutdown."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        upstream, store = Upstream(settings), ObjectStore(settings)
        reader = AsyncReader(store, settings.s3_max_connections)
        bus = await Bus.open(settings)
        hooks = webhooks.Webhooks(settings, bus)
        app.state.gateway = Gateway(settings, Gatekeeper(settings), upstream, store, reader, bus,
                                    uploads.Uploads(settings, bus, store, upstream), hooks,
                                    Archives(store, reader, settings.gateway_archives,
                                             settings.gateway_tile_cache_bytes),
                                    sheet_routes.SearchIndexes(store),
                                    downloads.zip_slots(settings), Iiif(settings))
        sweep = asyncio.create_task(app.state.gateway.uploads.clean_forever())
        await hooks.start()
        try:
            yield
        finally:
            sweep.cancel()
            await hooks.stop(settings.grpc_grace_seconds)
            await upstream.close()
            await reader.aclose()
            await bus.close()
            app.state.gateway.searches.close()

    app = FastAPI(title="planzoom gateway", version="1",
                  summary="Construction plan sets as Deep Zoom images: jobs, live progress, "
                          "tiles.", lifespan=lifespan)
    problems.install(app)
    app.include_router(job_routes.router)
    app.include_router(tiles.router)
    app.include_router(sheet_routes.router)
    app.include_router(revision_routes.router)
    app.include_router(downloads.router)
    app.include_router(upload_routes.router)
    app.include_router(webhooks.router)
    app.include_router(viewer.router)
    app.include_router(iiif.router)
    if not viewer.OPENSEADRAGON.exists():
        log.warning("%s is missing (run make setup): the viewer will not load",
                    viewer.OPENSEADRAGON)
    app.mount("/static", StaticFiles(directory=viewer.STATIC_DIR), name="static")

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz(request: Request):
        ready = getattr(request.app.state, "gateway", None) is not None
        return JSONResponse({"status": "ok" if ready else "starting"},
                            status_code=200 if ready else 503)

    app.add_middleware(
        CORSMiddleware, allow_origins=settings.gateway_cors_origins, allow_credentials=False,
        allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "If-None-Match",
                       "Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Metadata",
                       "Upload-Defer-Length", "Upload-Concat"],
        expose_headers=["ETag", "Location", "Retry-After", "Tus-Resumable", "Tus-Version",
                        "Tus-Extension", "Tus-Max-Size", "Upload-Offset", "Upload-Length",
                        "Upload-Expires", "Planzoom-Job-Id"],
        max_age=600)
    app.add_middleware(BodyLimit, limit=settings.gateway_max_body_bytes)
    if tracing.active():
        # Outermost: a server span per request, joining a caller's traceparent.
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        app.add_middleware(OpenTelemetryMiddleware)
    return app


def run() -> None:
    """``python -m services.gateway``: settings from the environment, JSON
    logs, Prometheus metrics on ``PLANZOOM_METRICS_PORT``, uvicorn on
    ``PLANZOOM_GATEWAY_ADDR`` (host:port) until SIGTERM, then in-flight
    requests get ``PLANZOOM_GRPC_GRACE_SECONDS`` to finish."""
    with service_process("gateway") as settings:
        host, _, port = settings.gateway_addr.rpartition(":")
        serve_metrics(settings.metrics_port)
        config = uvicorn.Config(
            create_app(settings), host=host.strip("[]") or "0.0.0.0", port=int(port),
            log_config=None, access_log=False, proxy_headers=False,
            timeout_graceful_shutdown=settings.grpc_grace_seconds,
            ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file)
        uvloop.run(uvicorn.Server(config).serve())
