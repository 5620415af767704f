"""The pull-consumer loop every planzoom consumer runs: render and tile on
their page jobs, progress on events and advisories."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from planzoom import metrics
from planzoom.errors import PlanzoomError
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
FailureHandler = Callable[[bytes, Delivery, str], Awaitable[None]]


def retry_delay(attempt: int) -> float:
    """Seconds before a failed delivery is retried: 2, 4, 8 ... capped at 60."""
    return float(min(60, 2**attempt))


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
    with exponential backoff (:func:`retry_delay`).

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
    ):
        self.js, self.stream, self.durable = js, stream, durable
        self.handle, self.on_failure = handle, on_failure
        self.concurrency, self.ack_wait, self.max_deliver = concurrency, ack_wait, max_deliver
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._in_flight: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._tasks = [asyncio.create_task(self._loop(self._sub))
                       for _ in range(self.concurrency)]

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        if self._in_flight:
            log.info("waiting for %d message(s) in flight", len(self._in_flight))
            await asyncio.wait(self._in_flight, timeout=grace)
        for t in list(self._in_flight) + self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._in_flight, return_exceptions=True)
        # A pull subscription's drain waits for fetched messages nobody will
        # take now; unsubscribing first lets the connection's drain finish.
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _loop(self, sub) -> None:
        while not self._stopping.is_set():
            try:
                # One message per fetch: nats-py's fetch(n > 1) can hold a
                # message it already has until its pull request expires
                # (nats-io/nats.py#933), which delays progress by up to the
                # fetch timeout; see docs/performance.md.
                msgs = await sub.fetch(1, timeout=2)
            except (TimeoutError, NatsTimeoutError):
                continue
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
                finally:
                    self._in_flight.discard(task)

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
        try:
            await self.handle(msg.data, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._failed(msg, delivery, e)
        else:
            await msg.ack()
        finally:
            beat.cancel()

    async def _failed(self, msg: Msg, delivery: Delivery, error: Exception) -> None:
        permanent = is_permanent(error)
        reason = (error.message if isinstance(error, PlanzoomError) else str(error)) \
            or type(error).__name__
        if not (permanent or delivery.last):
            metrics.PAGES.labels(self.durable, "retried").inc()
            delay = retry_delay(delivery.attempt)
            log.warning("%s: attempt %d/%d failed, retrying in %.0f s: %s", self.durable,
                        delivery.attempt, self.max_deliver, delay, reason, exc_info=True)
            await msg.nak(delay=delay)
            return
        log.error("%s: giving up after attempt %d/%d: %s", self.durable, delivery.attempt,
                  self.max_deliver, reason, exc_info=not permanent)
        try:
            await dead_letter(self.js, msg.metadata.stream, msg.subject,
                              msg.metadata.sequence.stream, msg.data, reason, delivery.attempt)
            if self.on_failure is not None:
                await self.on_failure(msg.data, delivery, reason)
        except Exception:
            # The failure could not be recorded: keep the message.
            log.exception("%s: could not record the failure", self.durable)
            await msg.nak(delay=retry_delay(delivery.attempt))
        else:
            metrics.PAGES.labels(self.durable, "failed").inc()
            await msg.term()
