"""Prometheus metrics of every service (prometheus-client), served over HTTP
on PLANZOOM_METRICS_PORT (0 = off) at ``/metrics``.

Names follow Prometheus conventions: ``_total`` counters, ``_seconds``
histograms.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Jobs by outcome: created, deduplicated, rejected (ingest); complete,
#: failed, cancelled (progress).
JOBS = Counter("planzoom_jobs_total", "Jobs by outcome", ["outcome"])
#: Pages by stage (render, tile) and outcome (done, failed, retried, skipped).
PAGES = Counter("planzoom_pages_total", "Pages by stage and outcome", ["stage", "outcome"])
#: Wall time of one page in a stage (render: PDFium + raster upload; tile:
#: download + pyramid + tile upload), seconds.
STAGE_SECONDS = Histogram(
    "planzoom_stage_duration_seconds", "Wall time of one page in a stage", ["stage"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640),
)
#: Deliveries of a page job beyond its first.
REDELIVERIES = Counter("planzoom_jetstream_redeliveries_total",
                       "Page jobs delivered again", ["consumer"])
#: S3 requests that stored page pyramids (tiles and .dzi, or an archive's
#: parts), by layout (files, archive).
PYRAMID_REQUESTS = Counter("planzoom_pyramid_s3_requests_total",
                           "S3 requests that stored page pyramids", ["layout"])
#: S3 requests botocore retried (throttling, 5xx, connection errors).
S3_RETRIES = Counter("planzoom_s3_retries_total", "S3 request retries")
#: RPCs refused or failed, by method and gRPC status code.
RPC_ERRORS = Counter("planzoom_rpc_errors_total", "RPCs that ended with an error",
                     ["method", "code"])
#: HTTP requests the gateway answered with a problem document, by route
#: (its template, e.g. /v1/jobs/{job_id}), HTTP status and reason.
HTTP_ERRORS = Counter("planzoom_http_errors_total", "HTTP requests answered with an error",
                      ["route", "status", "reason"])
#: Page jobs waiting or in flight in each stage, over every org (the
#: progress service exports them; KEDA scales render and tile on them).
RENDER_QUEUE = Gauge("planzoom_render_queue_pages", "Page jobs waiting or rendering")
TILE_QUEUE = Gauge("planzoom_tile_queue_pages", "Page jobs waiting or being tiled")
TRANSCODE_QUEUE = Gauge("planzoom_transcode_queue_videos",
                        "Videos waiting or being transcoded")
#: Open WatchJob streams.
WATCHERS = Gauge("planzoom_watchers", "Open WatchJob streams")
STALLED_JOBS = Gauge("planzoom_stalled_jobs",
                     "Jobs stalled at the last sweep (no report for PLANZOOM_STALL_SECONDS)")
#: From a stage emitting a progress event to the job record holding it, seconds.
UPDATE_LAG = Histogram(
    "planzoom_progress_update_lag_seconds", "Progress event to job record update",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve_metrics(port: int) -> None:
    """Start the /metrics HTTP endpoint on ``port`` (all interfaces); 0 = off."""
    if port:
        start_http_server(port)


def count_s3_retries(client) -> None:
    """Count the retries botocore made for each S3 call of ``client``."""

    def after_call(parsed=None, **_):
        attempts = ((parsed or {}).get("ResponseMetadata") or {}).get("RetryAttempts", 0)
        if attempts:
            S3_RETRIES.inc(attempts)

    client.meta.events.register("after-call.s3", after_call)
