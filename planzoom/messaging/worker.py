"""The pull-consumer loop every planzoom consumer runs: render and tile on
their page jobs, progress on events and advisories."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from planzoom import metrics, tracing
from planzoom.boundary import outage
from planzoom.errors import Internal, PlanzoomError, Timeout
from planzoom.messaging.events import dead_letter

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What a handler learns about the message it handles."""

    attempt: int  # 1-based delivery count
    max_deliver: int
    subject: str = ""  # the subject the message was published on

    @property
    def last(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[bytes, Delivery], Awaitable[None]]
#: ``on_failure(data, delivery, error)``: the message failed for good with
#: ``error`` (a PlanzoomError: an unexpected exception arrives as Internal,
#: its text only in the log).
FailureHandler = Callable[[bytes, Delivery, PlanzoomError], Awaitable[None]]


def retry_delay(attempt: int) -> float:
    """Seconds before a failed delivery is retried: 2, 4, 8 ... capped at 60."""
    return float(min(60, 2**attempt))


class Consumer:
    """Messages from one durable pull consumer."""

    def __init__(self, js: JetStreamContext, stream: str, durable: str):
        self.js, self.stream, self.durable = js, stream, durable
        self._sub = None

    async def next(self) -> list[Msg]:
        """The next message (a list of at most one); [] after 2 s without."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe_bind(durable=self.durable,
                                                          stream=self.stream)
        try:
            # One message per fetch: nats-py's fetch(n > 1) can hold a message
            # it already has until its pull request expires (nats-io/nats.py
            # #933), which delays progress by up to the fetch timeout; see
            # docs/performance.md.
            return await self._sub.fetch(1, timeout=2)
        except (TimeoutError, NatsTimeoutError):
            return []

    def done(self, msg: Msg) -> None:
        """``msg`` (from :meth:`next`) has been handled."""

    async def close(self) -> None:
        # A pull subscription's drain waits for fetched messages nobody will
        # take now; unsubscribing first lets the connection's drain finish.
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


def next_org(backlog: dict[str, tuple[int, int]], served: dict[str, float]) -> str | None:
    """The org whose consumer to pull from next, given each org's (messages
    waiting, messages delivered and not yet acknowledged): of the orgs with
    messages waiting, the one served longest ago (never served first), so
    work is taken round robin across orgs whatever each has queued. With
    none waiting, an org with unacknowledged messages: a pull is what makes
    the server redeliver one whose ack wait ran out, or give it up
    (MAX_DELIVERIES)."""
    for which in (0, 1):
        candidates = [org for org, counts in backlog.items() if counts[which] > 0]
        if candidates:
            return min(candidates, key=lambda org: (served.get(org, 0.0), org))
    return None


class FairConsumers:
    """Messages from the per-org consumers ``<prefix>-<org>`` of a work
    stream, one org after another (:func:`next_org`): one org's backlog of
    two thousand pages waits its turn beside another org's single page. A
    core subscription to ``doorbell`` (the stream's subjects) wakes an idle
    worker when anything is published. With ``per_org``, an org with that
    many messages in hand in this process is passed over until one is done:
    one org's slow work (webhook endpoints that hang) never holds every
    worker."""

    def __init__(self, js: JetStreamContext, nc, stream: str, prefix: str, doorbell: str,
                 per_org: int | None = None):
        self.js, self.nc, self.stream, self.prefix = js, nc, stream, prefix
        self.doorbell, self.per_org = doorbell, per_org
        self._busy: Counter[str] = Counter()
        self._subs: dict[str, object] = {}
        self._served: dict[str, float] = {}
        self._rung = asyncio.Event()
        self._bell = None

    async def _backlog(self) -> dict[str, tuple[int, int]]:
        backlog = {}
        for info in await self.js.consumers_info(self.stream):
            name = info.name or ""
            if name.startswith(self.prefix + "-"):
                backlog[name[len(self.prefix) + 1:]] = (info.num_pending or 0,
                                                        info.num_ack_pending or 0)
        return backlog

    async def next(self) -> list[Msg]:
        """The next message of the org whose turn it is; [] after about a
        second without any."""
        if self._bell is None:
            async def ring(_msg) -> None:
                self._rung.set()

            self._bell = await self.nc.subscribe(self.doorbell, cb=ring)
        self._rung.clear()
        backlog = await self._backlog()
        if self.per_org:
            backlog = {org: n for org, n in backlog.items() if self._busy[org] < self.per_org}
        org = next_org(backlog, self._served)
        if org is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rung.wait(), 1.0)
            return []
        self._served[org] = time.monotonic()
        # Counted before any wait: another loop choosing meanwhile must see
        # this org's share taken.
        self._busy[org] += 1
        msgs = []
        try:
            sub = self._subs.get(org)
            if sub is None:
                sub = self._subs[org] = await self.js.pull_subscribe_bind(
                    durable=f"{self.prefix}-{org}", stream=self.stream)
            msgs = await sub.fetch(1, timeout=0.5)
        except (TimeoutError, NatsTimeoutError):
            pass  # another worker took it
        finally:
            if not msgs:
                self._busy[org] -= 1
        return msgs

    def done(self, msg: Msg) -> None:
        """``msg`` (from :meth:`next`) has been handled: its org's count in
        hand goes down."""
        try:
            org = (msg.metadata.consumer or "").removeprefix(self.prefix + "-")
        except Exception:  # not a JetStream message: nothing was counted
            return
        if self._busy[org] > 0:
            self._busy[org] -= 1
        self._rung.set()  # an org passed over may be served again

    async def close(self) -> None:
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._bell is not None:
            with contextlib.suppress(Exception):
                await self._bell.unsubscribe()


def is_permanent(error: BaseException) -> bool:
    """True for an error no retry can fix: a PlanzoomError that is not
    retryable (a page PDFium cannot render, a raster that is not what its
    job says, an event for a job that does not exist). Anything else, an
    unexpected exception included, is worth another delivery."""
    return isinstance(error, PlanzoomError) and not error.retryable


class PullWorker:
    """Runs ``concurrency`` fetch loops on one durable pull consumer.

    Each message goes to ``handle``; success acks it. While the handler runs,
    an in-progress ack is sent every ack_wait / 3 seconds so a long page keeps
    its lease. A permanent error (:func:`is_permanent`), or any error on the
    last delivery, dead-letters the message, calls ``on_failure`` (which
    reports the page FAILED) if given, and terminates it; other errors nak it
    with exponential backoff (``backoff``, by default :func:`retry_delay`).
    With ``dead_letters=False`` a message that fails for good is not copied
    to PLANZOOM_DEAD_LETTERS: ``on_failure`` keeps what is worth keeping.

    A handler still running after ``max_seconds`` is cancelled and the
    message retried like any transient failure: in-progress heartbeats never
    hold a stuck page forever.

    An error from a fetch, an ack, a nak or a term is logged and the loop
    goes on (the message comes back after its ack wait). If a loop ends for
    any other reason while the worker is not stopping, ``on_dead(reason)``
    is called: the service turns NOT_SERVING so that Kubernetes restarts it.

    ``stop()`` stops fetching; messages in flight finish within ``grace``
    seconds or are nak'ed for immediate redelivery elsewhere.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        durable: str,
        handle: Handler,
        on_failure: FailureHandler | None = None,
        *,
        concurrency: int,
        ack_wait: float,
        max_deliver: int,
        on_dead: Callable[[str], None] | None = None,
        source: Consumer | FairConsumers | None = None,
        max_seconds: float | None = None,
        backoff: Callable[[int], float] = retry_delay,
        dead_letters: bool = True,
    ):
        self.on_dead, self.max_seconds = on_dead, max_seconds
        self.backoff, self.dead_letters = backoff, dead_letters
        self.source = source or Consumer(js, stream, durable)
        self.js, self.stream, self.durable = js, stream, durable
        self.handle, self.on_failure = handle, on_failure
        self.concurrency, self.ack_wait, self.max_deliver = concurrency, ack_wait, max_deliver
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._in_flight: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]
        for task in self._tasks:
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if self._stopping.is_set() or task.cancelled():
            return
        error = task.exception()
        reason = f"the {self.durable} consumer loop ended: {error!r}"
        log.critical(reason, exc_info=error)
        if self.on_dead is not None:
            self.on_dead(reason)

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        if self._in_flight:
            log.info("waiting for %d message(s) in flight", len(self._in_flight))
            await asyncio.wait(self._in_flight, timeout=grace)
        for t in list(self._in_flight) + self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._in_flight, return_exceptions=True)
        await self.source.close()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self.source.next()
            except Exception as e:  # connection trouble: the client reconnects by itself
                log.warning("fetch from %s failed: %s", self.durable, e)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._process(msg))
                self._in_flight.add(task)
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    # Shutting down past the grace period: hand the page back.
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    raise
                except Exception:
                    # An ack, nak or term that failed (NATS away): the
                    # message comes back after its ack wait.
                    log.exception("%s: could not end_if_pages_ended a message", self.durable)
                finally:
                    self._in_flight.discard(task)
                    self.source.done(msg)

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(1.0, self.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, msg: Msg) -> None:
        delivery = Delivery(attempt=msg.metadata.num_delivered, max_deliver=self.max_deliver,
                            subject=msg.subject)
        if delivery.attempt > 1:
            metrics.REDELIVERIES.labels(self.durable).inc()
        beat = asyncio.create_task(self._heartbeat(msg))
        span = tracing.consuming(f"{self.stream} process", msg.headers, **{
            "messaging.system": "nats", "messaging.destination.name": msg.subject,
            "messaging.consumer.group.name": self.durable,
            "messaging.message.delivery_attempt": delivery.attempt})
        try:
            with span:
                async with asyncio.timeout(self.max_seconds) as limit:
                    await self.handle(msg.data, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, TimeoutError) and limit.expired():
                e = Timeout(f"the work took longer than {self.max_seconds:g} s",
                            reason="WORK_TIMEOUT")
            await self._failed(msg, delivery, e)
        else:
            await msg.ack()
        finally:
            beat.cancel()

    async def _failed(self, msg: Msg, delivery: Delivery, error: Exception) -> None:
        away = outage(error)
        if away is not None:
            log.warning("%s: %s: %r", self.durable, away.reason, error)
            error = away
        permanent = is_permanent(error)
        if not isinstance(error, PlanzoomError):
            # Its text may name internals (an endpoint, a path): it stays in
            # the log, under an id the page's record and dead letter carry.
            error_id = uuid.uuid4().hex[:16]
            log.error("%s: unexpected error, error id %s", self.durable, error_id,
                      exc_info=error, extra={"error_id": error_id})
            error = Internal(f"internal error (error id {error_id} in the {self.durable} "
                             "log)")
        if not (permanent or delivery.last):
            metrics.PAGES.labels(self.durable, "retried").inc()
            delay = self.backoff(delivery.attempt)
            log.warning("%s: attempt %d/%d failed, retrying in %.0f s: %s", self.durable,
                        delivery.attempt, self.max_deliver, delay, error.message,
                        extra={"reason": error.reason})
            await msg.nak(delay=delay)
            return
        log.error("%s: giving up after attempt %d/%d: %s", self.durable, delivery.attempt,
                  self.max_deliver, error.message, extra={"reason": error.reason})
        try:
            if self.dead_letters:
                await dead_letter(self.js, msg.metadata.stream, msg.subject,
                                  msg.metadata.sequence.stream, msg.data, error,
                                  delivery.attempt)
            if self.on_failure is not None:
                await self.on_failure(msg.data, delivery, error)
        except Exception:
            # The failure could not be recorded: keep the message.
            log.exception("%s: could not record the failure", self.durable)
            await msg.nak(delay=self.backoff(delivery.attempt))
        else:
            metrics.PAGES.labels(self.durable, "failed").inc()
            await msg.term()
