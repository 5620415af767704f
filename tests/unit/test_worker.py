"""The pull-consumer loop with stand-ins for nats-py's objects: what it does
with each outcome of a handler, with a failing ack, and when it dies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from planzoom.errors import InvalidInput, Unavailable
from planzoom.messaging.worker import PullWorker
from planzoom.v1 import events_pb2


@dataclass
class Msg:
    data: bytes
    delivered: int = 1
    subject: str = "pages.render"
    calls: list = field(default_factory=list)
    fail_ack: bool = False
    headers: dict | None = None

    @property
    def metadata(self):
        return SimpleNamespace(num_delivered=self.delivered, stream="PLANZOOM_RENDER",
                               sequence=SimpleNamespace(stream=7))

    async def ack(self):
        self.calls.append("ack")
        if self.fail_ack:
            raise ConnectionError("nats went away")

    async def nak(self, delay=None):
        self.calls.append(("nak", delay))

    async def term(self):
        self.calls.append("term")

    async def in_progress(self):
        self.calls.append("in_progress")


class Sub:
    def __init__(self, batches):
        self.batches = list(batches)

    async def fetch(self, batch, timeout):
        if not self.batches:
            await asyncio.sleep(timeout)
            raise TimeoutError
        item = self.batches.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def unsubscribe(self):
        pass


class Js:
    def __init__(self, sub):
        self.sub, self.published = sub, []

    async def pull_subscribe_bind(self, durable, stream):
        return self.sub

    async def publish(self, subject, payload, headers=None, timeout=None):
        self.published.append(subject)
        return SimpleNamespace(duplicate=False)


PAGE = events_pb2.PageJob(job_id="0123456789abcdef", page=2).SerializeToString()


async def _run(batches, handle, **kw):
    sub = Sub(batches)
    js = Js(sub)
    failures, dead = [], []

    async def on_failure(data, delivery, error):
        failures.append(error)

    worker = PullWorker(js, "PLANZOOM_RENDER", "render", handle, on_failure, concurrency=1,
                        ack_wait=30, max_deliver=3, on_dead=dead.append, **kw)
    await worker.start()
    await asyncio.sleep(0.1)
    await worker.stop(1)
    return js, failures, dead


async def test_outcomes_of_a_handler():
    ok, retry, permanent, last = Msg(PAGE), Msg(PAGE), Msg(PAGE), Msg(PAGE, delivered=3)

    outcomes = iter([None, Unavailable("S3 is away"),
                     InvalidInput("PDFium cannot render this page"),
                     RuntimeError("unexpected, on the last delivery")])

    async def handle(data, delivery):
        if (error := next(outcomes)) is not None:
            raise error

    js, failures, dead = await _run([[ok], [retry], [permanent], [last]], handle)
    assert ok.calls == ["ack"]
    assert retry.calls == [("nak", 2.0)], "a retryable error is retried with backoff"
    assert permanent.calls == ["term"] and last.calls == ["term"]
    assert [(f.message, f.reason) for f in failures[:1]] == [
        ("PDFium cannot render this page", "INVALID_ARGUMENT")]
    # An unexpected exception's text stays in the log: the page gets an id.
    assert failures[1].reason == "INTERNAL" and "error id" in failures[1].message
    assert "unexpected" not in failures[1].message
    assert js.published == ["deadletter.render.0123456789abcdef"] * 2
    assert dead == []


async def test_a_failing_ack_does_not_end_the_loop():
    first, second = Msg(PAGE, fail_ack=True), Msg(PAGE)
    seen = []

    async def handle(data, delivery):
        seen.append(data)

    _, _, dead = await _run([[first], [second]], handle)
    assert len(seen) == 2 and second.calls == ["ack"], "the loop went on"
    assert dead == []


async def test_fetch_errors_are_waited_out_but_a_dead_loop_is_reported():
    class Fatal(BaseException):
        pass

    seen = []

    async def handle(data, delivery):
        seen.append(data)

    _, _, dead = await _run([ConnectionError("reconnecting"), [Msg(PAGE)], Fatal()], handle)
    assert len(seen) == 1, "a fetch error is logged and the loop fetches again"
    assert len(dead) == 1 and "render consumer loop ended" in dead[0]


@pytest.fixture(autouse=True)
def _fast_retry_sleep(monkeypatch):
    """The loop sleeps 1 s after a failed fetch; 0 here."""
    real = asyncio.sleep

    async def sleep(seconds, *a, **kw):
        return await real(0 if seconds == 1 else seconds, *a, **kw)

    monkeypatch.setattr("planzoom.messaging.worker.asyncio.sleep", sleep)


def test_orgs_take_turns_whatever_their_backlog():
    from planzoom.messaging.worker import next_org

    backlog = {"big": (2000, 1), "small": (1, 0), "idle": (0, 0)}
    served: dict[str, float] = {}
    order = []
    for t in range(4):
        org = next_org(backlog, served)
        order.append(org)
        served[org] = t + 1  # monotonic seconds, after the start
        waiting, unacked = backlog[org]
        backlog[org] = (max(0, waiting - 1), unacked)
    assert order == ["big", "small", "big", "big"], "the small org is not left behind"
    assert next_org({"a": (0, 2), "b": (0, 0)}, {}) == "a", "an unacked message gets a pull"
    assert next_org({"a": (0, 0)}, {}) is None


async def test_a_bus_or_store_away_is_an_outage_not_an_unexpected_error(caplog):
    """A NATS timeout (leaders being elected after a server died) or S3's
    SlowDown met while handling a page is retried and, on the last
    delivery, recorded as BUS_UNAVAILABLE / STORE_UNAVAILABLE: never logged
    as an unexpected error under an error id."""
    from botocore.exceptions import ClientError
    from nats.errors import TimeoutError as NatsTimeoutError

    bus, store = Msg(PAGE), Msg(PAGE, delivered=3)
    slow = ClientError({"Error": {"Code": "SlowDown"},
                        "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
    outcomes = iter([NatsTimeoutError(), slow])

    async def handle(data, delivery):
        raise next(outcomes)

    with caplog.at_level("WARNING"):
        js, failures, dead = await _run([[bus], [store]], handle)
    assert bus.calls == [("nak", 2.0)] and store.calls == ["term"]
    assert [f.reason for f in failures] == ["STORE_UNAVAILABLE"]
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert any("BUS_UNAVAILABLE" in r.getMessage() for r in caplog.records)
