"""The render and tile work queues, one subject and one durable consumer per
org in each stream, so that workers take work fairly across orgs
(:class:`planzoom.messaging.worker.FairConsumers`):

==================  =====================  =====================
stream              subject                consumer
==================  =====================  =====================
PLANZOOM_RENDER     pages.render.<org>     render-<org>
PLANZOOM_TILE       pages.tile.<org>       tile-<org>
PLANZOOM_TRANSCODE  videos.transcode.<org> transcode-<org>
==================  =====================  =====================

An org's consumers are created before anything is published for it (and a
consumer idle for a day is removed by the server). ``max_ack_pending`` of
each is the org's limit of pages in flight per stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from planzoom.config import Settings
from planzoom.grants import WorkGrants
from planzoom.ids import check_id
from planzoom.media import VIDEO_KINDS
from planzoom.messaging.publishing import publish
from planzoom.messaging.topology import (
    OVERLAY_CONSUMER,
    RENDER_CONSUMER,
    RENDER_STREAM,
    TILE_CONSUMER,
    TILE_STREAM,
    TRANSCODE_CONSUMER,
    TRANSCODE_STREAM,
    ensure_consumer,
)
from planzoom.pages import geometry_of
from planzoom.v1 import events_pb2, jobs_pb2

#: A consumer unused this long is removed by the server.
IDLE_CONSUMER_SECONDS = 24 * 3600
#: An org's consumers are checked again after this long (they may have been
#: removed as idle meanwhile).
ENSURE_AGAIN_SECONDS = 600


def render_subject(org: str) -> str:
    return f"pages.render.{check_id('org', org)}"


def tile_subject(org: str) -> str:
    return f"pages.tile.{check_id('org', org)}"


def overlay_subject(org: str) -> str:
    return f"pages.tile.overlay.{check_id('org', org)}"


def transcode_subject(org: str) -> str:
    return f"videos.transcode.{check_id('org', org)}"


#: Per work stream: its consumers' prefix and the subject of an org.
_QUEUES = {RENDER_STREAM: (RENDER_CONSUMER, render_subject),
           TILE_STREAM: (TILE_CONSUMER, tile_subject),
           TRANSCODE_STREAM: (TRANSCODE_CONSUMER, transcode_subject)}


#: Pages per preview pass (one message): small enough that several render
#: workers share a set's previews, large enough that a pass is mostly
#: rendering.
PREVIEW_PAGES = 8


def _runs(pages: list[int], most: int) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive numbers in ``pages``, cut
    into runs of at most ``most``."""
    runs: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1 and page - runs[-1][0] < most:
            runs[-1] = (runs[-1][0], page)
        else:
            runs.append((page, page))
    return runs


class WorkQueues:
    """Publishing page jobs and tile jobs into the per-org work queues."""

    def __init__(self, js: JetStreamContext, settings: Settings):
        self.js, self.s = js, settings
        # Ingest and progress hold the key; a stage that publishes only
        # tile jobs passes on the grant it was given.
        self.grants = WorkGrants(settings.work_grant_key) if settings.work_grant_key else None
        self._ensured: dict[tuple[str, str], float] = {}

    def _config(self, prefix: str, subject: str, org: str) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=f"{prefix}-{org}", filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.s.ack_wait_seconds, max_deliver=self.s.max_deliver,
            max_ack_pending=self.s.org_max_pages_in_flight,
            inactive_threshold=IDLE_CONSUMER_SECONDS, num_replicas=self.s.nats_replicas)

    async def ensure(self, org: str, streams: tuple[str, ...] = (RENDER_STREAM, TILE_STREAM)
                     ) -> None:
        """Create the org's consumers on ``streams`` if they are missing."""
        for stream in streams:
            prefix, subject = _QUEUES[stream]
            await self._ensure(stream, prefix, subject(org), org)

    async def ensure_overlays(self, org: str) -> None:
        """Create the org's overlay consumer (``overlay-<org>`` on the tile
        stream) if it is missing."""
        await self._ensure(TILE_STREAM, OVERLAY_CONSUMER, overlay_subject(org), org)

    async def _ensure(self, stream: str, prefix: str, subject: str, org: str) -> None:
        if time.monotonic() - self._ensured.get((prefix, org), -1e9) < ENSURE_AGAIN_SECONDS:
            return
        await ensure_consumer(self.js, stream, self._config(prefix, subject, org))
        self._ensured[(prefix, org)] = time.monotonic()

    async def publish_page_jobs(self, job: jobs_pb2.Job, pages: Iterable[int]) -> list[int]:
        """Publish the PageJob of each of ``pages`` (1-based) of ``job``, built
        from the job record alone (each page's geometry as ingest worked it
        out), with Nats-Msg-Id ``render.<job_id>.<page>``:
        the same page published again within the duplicate window of the
        first is not stored again (JetStream keeps a work-queue message's id
        for the whole window, acknowledged or not). Returns the pages actually
        stored (the others were duplicates). A video's one "page" goes to the
        transcode stream (Nats-Msg-Id ``transcode.<job_id>.1``).

        A PDF's page jobs come with its preview passes, a PageJob per run of
        up to PREVIEW_PAGES consecutive pages with their geometries in ``previews``
        (Nats-Msg-Id ``preview.<job_id>.<first page>``), in this order: the
        first pass, the first page, the other passes, the other pages. So
        the first page is sharp as soon as it can be, and every page has
        its overview and thumbnail before the rest of the set's
        full-resolution work is under way."""
        video = job.source_kind in VIDEO_KINDS
        stream = TRANSCODE_STREAM if video else RENDER_STREAM
        await self.ensure(job.plan.org, (stream,) if video else (RENDER_STREAM, TILE_STREAM))
        subject, stored = _QUEUES[stream][1](job.plan.org), []
        pages = list(pages)

        grants = {}
        if self.grants:
            grants = {"grant": self.grants.mint("transcode" if video else "render", job.job_id),
                      "tile_grant": "" if video else self.grants.mint("tile", job.job_id)}

        def page_job(page: int, **fields) -> events_pb2.PageJob:
            return events_pb2.PageJob(
                job_id=job.job_id, plan=job.plan, source_key=job.source_key,
                source_sha256=job.source_sha256, page=page, total_pages=job.total_pages,
                options=job.options, source_kind=job.source_kind, **grants, **fields)

        async def publish_pages(numbers: list[int]) -> None:
            for page in numbers:
                data = page_job(page, geometry=geometry_of(job.pages[page - 1]))
                if await publish(self.js, subject, data.SerializeToString(),
                                 f"{'transcode' if video else 'render'}.{job.job_id}.{page}"):
                    stored.append(page)

        async def publish_previews(runs: list[tuple[int, int]]) -> None:
            for first, last in runs:
                previews = [geometry_of(job.pages[n - 1]) for n in range(first, last + 1)]
                await publish(self.js, subject, page_job(first, previews=previews)
                              .SerializeToString(), f"preview.{job.job_id}.{first}")

        variants = job.options.variants
        runs = _runs(pages, PREVIEW_PAGES) if job.source_kind in ("", "pdf") and (
            variants.overview_px or variants.thumbnail_px) else []
        await publish_previews(runs[:1])
        await publish_pages(pages[:1])
        await publish_previews(runs[1:])
        await publish_pages(pages[1:])
        return stored

    async def publish_overlays(self, job: jobs_pb2.Job) -> int:
        """Ask the tile stage to lay each page ``job`` revised over its
        previous version (:meth:`publish_overlay`). Returns the overlays
        asked for."""
        revised = [p for p in job.pages if p.sheet.change == "revised"
                   and p.sheet.HasField("previous")]
        for p in revised:
            await self.publish_overlay(job, p.page, p.sheet.previous.job_id,
                                       p.sheet.previous.page)
        return len(revised)

    async def publish_overlay(self, job: jobs_pb2.Job, page: int, previous_job_id: str,
                              previous_page: int, provisional: bool = False) -> None:
        """Ask the tile stage to lay ``page`` of ``job`` over page
        ``previous_page`` of job ``previous_job_id`` (a TileJob with
        ``overlay``; Nats-Msg-Id ``overlay.<job_id>.<page>``, and
        ``….provisional`` for a request made while the job runs: a
        finalisation run again, or a page reported done twice, publishes
        nothing new)."""
        await self.ensure_overlays(job.plan.org)
        request = events_pb2.TileJob(
            job_id=job.job_id, plan=job.plan, page=page, total_pages=job.total_pages,
            options=job.options, overlay=events_pb2.OverlayRequest(
                previous_job_id=previous_job_id, previous_page=previous_page,
                provisional=provisional))
        await publish(self.js, overlay_subject(job.plan.org), request.SerializeToString(),
                      f"overlay.{job.job_id}.{page}" + (".provisional" if provisional else ""))

    async def publish_tile_job(self, tile_job: events_pb2.TileJob) -> None:
        """Hand a rendered page to the tile stage (Nats-Msg-Id
        ``tile.<job_id>.<page>``)."""
        await self.ensure(tile_job.plan.org, (TILE_STREAM,))
        await publish(self.js, tile_subject(tile_job.plan.org), tile_job.SerializeToString(),
                      f"tile.{tile_job.job_id}.{tile_job.page}")
