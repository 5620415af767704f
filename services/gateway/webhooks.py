"""Webhooks: an org's admins register HTTP endpoints that are told when a
job ends (``job.completed``, ``job.failed``, ``job.cancelled``).

- ``POST /v1/webhooks`` registers one (its signing secret is in this answer
  only), ``GET /v1/webhooks`` lists them, ``DELETE /v1/webhooks/{id}``
  removes one and its dead letters, ``GET /v1/webhooks/dead-letters`` lists
  the deliveries that never succeeded.
- Deliveries follow Standard Webhooks (https://www.standardwebhooks.com/,
  the ``standardwebhooks`` package): a JSON POST with headers
  ``webhook-id`` (the same on every retry of one delivery),
  ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed by the
  base64 secret after ``whsec_``). Body: ``{"type": <event>, "timestamp":
  <RFC 3339>, "data": {job_id, plan, state, total_pages, completed_pages,
  failed_pages, error, reason, finished_at, sheets}}`` (``reason``:
  PAGES_FAILED or JOB_CANCELLED, docs/reasons.md; empty for a complete job;
  ``sheets``: which sheets were new, revised or unchanged, docs/revisions.md).
- Durable: the progress service announces each ended job on JetStream
  (``jobs.ended.<org>.<job>``); consumer ``webhooks`` turns it into one
  WebhookDelivery per endpoint on ``webhooks.deliver.<org>``, and the
  per-org consumers ``deliveries-<org>`` (taken in turn, an org holding at
  most half the delivery workers, so one org's slow endpoints do not hold
  back another's) send them. A 2xx answer ends a
  delivery (its body is never read); anything else, or no status within
  ``PLANZOOM_WEBHOOK_TIMEOUT_SECONDS`` (one deadline from connecting), is
  retried after ``PLANZOOM_WEBHOOK_RETRY_SECONDS`` doubling up to
  ``PLANZOOM_WEBHOOK_RETRY_MAX_SECONDS``, ``PLANZOOM_WEBHOOK_MAX_ATTEMPTS``
  times in all; then it is kept as a dead letter (KV
  ``webhookdead.<org>.<delivery id>``). A gateway restart loses nothing:
  the messages wait in JetStream.
- SSRF: an endpoint whose host resolves to anything but a global unicast
  address (IPv4 inside IPv6 included: mapped, 6to4, Teredo, NAT64) is
  refused at registration and again at each delivery (the connection goes to the address that was
  checked, so a DNS answer cannot change between check and use), unless
  ``PLANZOOM_WEBHOOK_ALLOW_PRIVATE`` (:mod:`services.gateway.endpoints`).
  Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from fastapi import APIRouter, Request, Response
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, Field
from standardwebhooks.webhooks import Webhook

from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.errors import (
    InvalidInput,
    NotFound,
    PlanzoomError,
    ResourceExhausted,
    Unavailable,
    reason_name,
)
from planzoom.messaging import topology
from planzoom.messaging.publishing import publish
from planzoom.messaging.worker import Delivery, FairConsumers, PullWorker
from planzoom.v1 import events_pb2, jobs_pb2
from services.gateway.access import Access
from services.gateway.bus import Bus
from services.gateway.endpoints import check_url, resolve_allowed

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

ENDPOINT_ID = re.compile(r"[0-9a-f]{16}")
EVENTS = {jobs_pb2.JOB_STATE_COMPLETE: "job.completed", jobs_pb2.JOB_STATE_FAILED: "job.failed",
          jobs_pb2.JOB_STATE_CANCELLED: "job.cancelled"}


def _backoff(settings: Settings):
    def delay(attempt: int) -> float:
        return min(settings.webhook_retry_max_seconds,
                   settings.webhook_retry_seconds * 2 ** (attempt - 1))
    return delay


def endpoint_key(org: str, endpoint_id: str) -> str:
    return f"webhook.{org}.{endpoint_id}"


def dead_key(org: str, delivery_id: str) -> str:
    return f"webhookdead.{org}.{delivery_id}"


def payload(ended: events_pb2.JobEnded, event_type: str) -> bytes:
    """The JSON body of a delivery (see the module)."""
    return json.dumps({
        "type": event_type,
        "timestamp": ended.finished_at.ToJsonString() if ended.HasField("finished_at")
        else now_ts().ToJsonString(),
        "data": {"job_id": ended.job_id,
                 "plan": {"org": ended.plan.org, "project": ended.plan.project,
                          "plan": ended.plan.plan},
                 "state": jobs_pb2.JobState.Name(ended.state),
                 "total_pages": ended.total_pages, "completed_pages": ended.completed_pages,
                 "failed_pages": ended.failed_pages, "error": ended.error,
                 "reason": reason_name(ended.reason),
                 "finished_at": ended.finished_at.ToJsonString(),
                 "sheets": sheet_changes(ended)},
    }, separators=(",", ":")).encode()


def sheet_changes(ended: events_pb2.JobEnded) -> dict[str, list[dict]]:
    """A complete PDF job's sheets against the plan's versions before it
    (docs/revisions.md): ``{"new": [...], "revised": [...], "unchanged":
    [...]}``, each ``{"page", "number"}`` (number null for a sheet with
    none); empty lists for any other job."""
    out: dict[str, list[dict]] = {"new": [], "revised": [], "unchanged": []}
    for c in ended.sheet_changes:
        if c.change in out:
            out[c.change].append({"page": c.page, "number": c.number or None})
    return out


class Webhooks:
    """Endpoints in KV, the fan-out of job-ended events, and the delivery
    workers."""

    def __init__(self, settings: Settings, bus: Bus):
        self.s, self.bus = settings, bus
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds,
                                      follow_redirects=False, trust_env=False)
        self.workers: list[PullWorker] = []
        self._ensured: set[str] = set()

    async def start(self) -> None:
        fan_out = PullWorker(self.bus.js, topology.JOB_EVENTS_STREAM,
                             topology.JOB_EVENTS_CONSUMER, self.fan_out, concurrency=1,
                             ack_wait=topology.WEBHOOK_ACK_WAIT_SECONDS,
                             max_deliver=topology.PROGRESS_MAX_DELIVER)
        self.workers = [fan_out]
        if self.s.webhook_workers:
            self.workers.append(PullWorker(
                self.bus.js, topology.WEBHOOKS_STREAM, topology.WEBHOOKS_CONSUMER, self.deliver,
                self.keep_dead_letter, concurrency=self.s.webhook_workers,
                ack_wait=topology.WEBHOOK_ACK_WAIT_SECONDS,
                max_deliver=self.s.webhook_max_attempts, backoff=_backoff(self.s),
                dead_letters=False,
                # An org's deliveries hold at most half the workers: its
                # endpoints that hang cannot delay every other org's.
                source=FairConsumers(self.bus.js, self.bus.nc, topology.WEBHOOKS_STREAM,
                                     topology.WEBHOOKS_CONSUMER, "webhooks.deliver.>",
                                     per_org=max(1, self.s.webhook_workers // 2))))
        for worker in self.workers:
            await worker.start()

    async def stop(self, grace: float) -> None:
        for worker in self.workers:
            await worker.stop(grace)
        await self.http.aclose()

    # -- endpoints ----------------------------------------------------------

    async def register(self, org: str, url: str, events: list[str]
                       ) -> events_pb2.WebhookEndpoint:
        _, host, port = check_url(url)
        await resolve_allowed(host, port, self.s.webhook_allow_private)
        if len(await self.endpoints(org)) >= self.s.webhook_max_endpoints:
            raise ResourceExhausted(f"an org may register {self.s.webhook_max_endpoints} "
                                    "webhooks; delete one first", reason="TOO_MANY_WEBHOOKS")
        endpoint = events_pb2.WebhookEndpoint(
            id=secrets.token_hex(8), org=org, url=url, events=sorted(set(events)),
            secret=new_secret(), created_at=now_ts())
        await self.bus.kv.create(endpoint_key(org, endpoint.id), endpoint.SerializeToString())
        log.info("webhook registered", extra={"org": org, "endpoint_id": endpoint.id})
        return endpoint

    async def endpoints(self, org: str) -> list[events_pb2.WebhookEndpoint]:
        return await self.bus.values(endpoint_key(org, "*"), events_pb2.WebhookEndpoint)

    async def remove(self, org: str, endpoint_id: str) -> None:
        got = None
        if ENDPOINT_ID.fullmatch(endpoint_id):
            got = await self.bus.get(endpoint_key(org, endpoint_id), events_pb2.WebhookEndpoint)
        if got is None:
            raise NotFound(f"no webhook {endpoint_id}", reason="WEBHOOK_NOT_FOUND")
        await self.bus.kv.delete(endpoint_key(org, endpoint_id))
        for letter in await self.dead_letters(org):
            if letter.delivery.endpoint_id == endpoint_id:
                await self.bus.kv.delete(dead_key(org, letter.delivery.delivery_id))

    async def dead_letters(self, org: str) -> list[events_pb2.WebhookDeadLetter]:
        return await self.bus.values(dead_key(org, "*"), events_pb2.WebhookDeadLetter)

    # -- the pipeline --------------------------------------------------------

    async def _ensure_org(self, org: str) -> None:
        """The org's delivery consumer, created before its first delivery."""
        if org in self._ensured:
            return
        await topology.ensure_consumer(self.bus.js, topology.WEBHOOKS_STREAM, ConsumerConfig(
            durable_name=f"{topology.WEBHOOKS_CONSUMER}-{org}",
            filter_subject=topology.webhook_subject(org), ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=topology.WEBHOOK_ACK_WAIT_SECONDS,
            max_deliver=-1, max_ack_pending=self.s.webhook_org_in_flight,
            num_replicas=self.s.nats_replicas))
        self._ensured.add(org)

    async def fan_out(self, data: bytes, delivery: Delivery) -> None:
        """One JobEnded → one WebhookDelivery per endpoint of its org that
        asked for its event (Nats-Msg-Id ``<job>.<endpoint>``: a redelivered
        event is not delivered twice)."""
        ended = events_pb2.JobEnded.FromString(data)
        event_type = EVENTS.get(ended.state)
        if event_type is None:
            return
        org = ended.plan.org
        wanted = [e for e in await self.endpoints(org) if event_type in e.events]
        log.info("job ended: %d webhook deliveries", len(wanted),
                 extra={"org": org, "job_id": ended.job_id, "event": event_type})
        if not wanted:
            return
        await self._ensure_org(org)
        body = payload(ended, event_type)
        for endpoint in wanted:
            message = events_pb2.WebhookDelivery(
                delivery_id=f"msg_{ended.job_id}_{endpoint.id}", org=org,
                endpoint_id=endpoint.id, event_type=event_type, payload=body,
                event_time=ended.finished_at)
            await publish(self.bus.js, topology.webhook_subject(org),
                          message.SerializeToString(), f"{ended.job_id}.{endpoint.id}")

    async def deliver(self, data: bytes, delivery: Delivery) -> None:
        """Send one delivery, signed; raises Unavailable (retried) unless
        the endpoint answers 2xx. An endpoint removed meanwhile is skipped."""
        message = events_pb2.WebhookDelivery.FromString(data)
        got = await self.bus.get(endpoint_key(message.org, message.endpoint_id),
                                 events_pb2.WebhookEndpoint)
        if got is None:
            return
        endpoint = got[0]
        log.info("webhook sending", extra={"org": message.org, "delivery_id":
                                           message.delivery_id, "attempt": delivery.attempt})
        scheme, host, port = check_url(endpoint.url)
        address = await resolve_allowed(host, port, self.s.webhook_allow_private)
        parts = urlsplit(endpoint.url)
        netloc = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
        timestamp = datetime.now(tz=UTC)
        signature = Webhook(endpoint.secret).sign(message.delivery_id, timestamp,
                                                  message.payload.decode())
        headers = {"webhook-id": message.delivery_id,
                   "webhook-timestamp": str(int(timestamp.timestamp())),
                   "webhook-signature": signature, "content-type": "application/json",
                   "user-agent": "planzoom-webhooks/1", "host": parts.netloc}
        try:
            # One deadline from connect to the answer's status, however each
            # phase dawdles; only the status counts, so no byte of the
            # answer's body is read (closing drops the connection).
            async with asyncio.timeout(self.s.webhook_timeout_seconds):
                async with self.http.stream("POST", pinned, content=message.payload,
                                            headers=headers,
                                            extensions={"sni_hostname": host}) as response:
                    pass
        except TimeoutError:
            raise Unavailable(f"no answer within {self.s.webhook_timeout_seconds:g} s",
                              reason="WEBHOOK_UNREACHABLE") from None
        except httpx.HTTPError as e:
            raise Unavailable(f"{type(e).__name__}: {e or 'no answer'}",
                              reason="WEBHOOK_UNREACHABLE") from None
        if not 200 <= response.status_code < 300:
            raise Unavailable(f"the endpoint answered HTTP {response.status_code}",
                              reason="WEBHOOK_REFUSED")
        log.info("webhook delivered", extra={"org": message.org, "delivery_id":
                                             message.delivery_id, "attempt": delivery.attempt})

    async def keep_dead_letter(self, data: bytes, delivery: Delivery,
                               error: PlanzoomError) -> None:
        message = events_pb2.WebhookDelivery.FromString(data)
        got = await self.bus.get(endpoint_key(message.org, message.endpoint_id),
                                 events_pb2.WebhookEndpoint)
        letter = events_pb2.WebhookDeadLetter(
            delivery=message, url=got[0].url if got else "", error=error.message,
            reason=error.reason_code, attempts=delivery.attempt, failed_at=now_ts())
        await self.bus.kv.put(dead_key(message.org, message.delivery_id),
                              letter.SerializeToString())


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 24 random bytes
    in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _webhooks(request: Request) -> Webhooks:
    return request.app.state.gateway.webhooks


def _admin(request: Request) -> Access:
    return request.app.state.gateway.gatekeeper.check(request, "admin")


def endpoint_json(endpoint: events_pb2.WebhookEndpoint, secret: bool = False) -> dict:
    body = {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events),
            "created_at": endpoint.created_at.ToJsonString()}
    if secret:
        body["secret"] = endpoint.secret
    return body


class NewEndpoint(BaseModel):
    """A webhook endpoint to register."""

    url: str = Field(max_length=2000, description="http(s) URL the deliveries are POSTed to")
    events: list[Literal["job.completed", "job.failed", "job.cancelled"]] = Field(
        default=["job.completed", "job.failed", "job.cancelled"], min_length=1,
        description="the events it is told of")


@router.post("", status_code=201, summary="Register a webhook endpoint")
async def register_webhook(request: Request, endpoint: NewEndpoint) -> dict:
    """Register an endpoint for the caller's org (admin). Answers 201 with
    ``id``, ``url``, ``events``, ``created_at`` and ``secret`` (``whsec_…``,
    shown this once: keep it to verify signatures). 400 for a URL that is
    not http(s), does not resolve, or resolves to a non-public address
    (``WEBHOOK_URL_NOT_ALLOWED``); 429 past the org's number of endpoints."""
    access = _admin(request)
    try:
        created = await _webhooks(request).register(access.caller.org, endpoint.url,
                                                    endpoint.events)
    except Unavailable as e:  # the host does not resolve: the request is what is wrong
        raise InvalidInput(e.message, field="url", reason=e.reason) from None
    return endpoint_json(created, secret=True)


@router.get("", summary="The org's webhook endpoints")
async def list_webhooks(request: Request) -> dict:
    """``{"webhooks": [{id, url, events, created_at}]}`` of the caller's org
    (admin); secrets are never shown again."""
    access = _admin(request)
    return {"webhooks": [endpoint_json(e) for e in
                         await _webhooks(request).endpoints(access.caller.org)]}


@router.get("/dead-letters", summary="Deliveries that never succeeded")
async def list_dead_letters(request: Request) -> dict:
    """``{"dead_letters": [{delivery_id, endpoint_id, url, event_type,
    error, reason, attempts, failed_at, payload}]}`` of the caller's org
    (admin; ``reason`` is the catalogue's, docs/reasons.md):
    deliveries whose every attempt failed, kept until their endpoint is
    deleted."""
    access = _admin(request)
    letters = await _webhooks(request).dead_letters(access.caller.org)
    return {"dead_letters": [
        {"delivery_id": d.delivery.delivery_id, "endpoint_id": d.delivery.endpoint_id,
         "url": d.url, "event_type": d.delivery.event_type, "error": d.error,
         "reason": reason_name(d.reason),
         "attempts": d.attempts, "failed_at": d.failed_at.ToJsonString(),
         "payload": json.loads(d.delivery.payload)} for d in letters]}


@router.delete("/{endpoint_id}", status_code=204, summary="Remove a webhook endpoint")
async def delete_webhook(request: Request, endpoint_id: str) -> Response:
    """Remove an endpoint of the caller's org (admin) and its dead letters;
    deliveries still queued for it are dropped. 404 for an unknown id."""
    access = _admin(request)
    await _webhooks(request).remove(access.caller.org, endpoint_id)
    return Response(status_code=204)
