"""The one gRPC boundary, on a real grpc.aio server on 127.0.0.1: every
call but health needs a valid token and the method's role; domain errors
become their status codes with details, anything unexpected becomes
INTERNAL with an error id (logged, never the exception's text), and
streaming RPCs end the same way after what they already sent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import time

import grpc
import jwt
import pytest
from botocore.exceptions import ClientError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from nats import errors as nats_errors
from nats.js import errors as nats_js_errors

from planzoom import auth, metrics
from planzoom.auth import TokenVerifier
from planzoom.boundary import RpcBoundary, method_roles
from planzoom.config import Settings
from planzoom.ids import check_id
from planzoom.jobstore import JobNotFound
from planzoom.server import Service, serve
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from planzoom_devstack.issuer import DevIssuer

SECRET = "/srv/internal/secret-path.db"


class Servicer(progress_pb2_grpc.ProgressServiceServicer):
    """ProgressService whose RPCs fail in the ways the boundary must map."""

    async def GetJob(self, request, context):
        check_id("job_id", request.job_id)  # InvalidId for a bad one
        if request.job_id == "boom":
            raise RuntimeError(f"cannot open {SECRET}")
        if request.job_id == "abort":
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "aborted by the handler")
        if request.job_id == "bus-away":
            raise nats_errors.TimeoutError  # what a KV read raises while NATS restarts
        if request.job_id == "store-slowdown":  # S3 still saying SlowDown after retries
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your rate"},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        if request.job_id == "store-denied":  # a 403 is a bug or a policy, not a blip
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
        if request.job_id == "bus-recovering":
            # What JetStream answers while it recovers its streams after a restart.
            raise nats_js_errors.ServiceUnavailableError(code=503, description="unavailable")
        raise JobNotFound(request.job_id)

    async def CancelJob(self, request, context):
        return jobs_pb2.Job(job_id=request.job_id, error=auth.current().subject)

    async def WatchJob(self, request, context):
        yield progress_pb2.JobUpdate(job=jobs_pb2.Job(job_id=request.job_id), snapshot=True)
        if request.job_id == "boom":
            raise KeyError(SECRET)
        raise JobNotFound(request.job_id)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> DevIssuer:
    return DevIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture
async def server(issuer):
    settings = Settings(**{k.removeprefix("PLANZOOM_").lower(): v
                           for k, v in issuer.env().items()})
    roles = method_roles(progress_pb2.DESCRIPTOR.services_by_name["ProgressService"], {
        "GetJob": "viewer", "WatchJob": "viewer", "ListJobs": "viewer", "CancelJob": "admin",
        "Reconcile": "admin", "SetSheet": "uploader", "ListSheets": "viewer"})
    server = grpc.aio.server(interceptors=[RpcBoundary(TokenVerifier(settings), roles)])
    progress_pb2_grpc.add_ProgressServiceServicer_to_server(Servicer(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(0)


class _Authorized:
    """A ProgressService stub whose calls carry ``token``."""

    def __init__(self, channel, token: str | None):
        self._stub = progress_pb2_grpc.ProgressServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


@pytest.fixture
def stub(server, issuer):
    return _Authorized(server, issuer.mint("acme", "viewer"))


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


def _errors_counted(method: str, code: str) -> float:
    return metrics.RPC_ERRORS.labels(f"/planzoom.v1.ProgressService/{method}", code)._value.get()


async def test_domain_errors_become_their_codes(stub):
    before = _errors_counted("GetJob", "INVALID_ARGUMENT")
    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="../etc"), timeout=10))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid id" in e.details()
    status = rpc_status.from_call(e)
    assert status is not None and status.details, "a google.rpc detail is attached"
    assert _errors_counted("GetJob", "INVALID_ARGUMENT") == before + 1

    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="0123"), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "no job with id '0123'")


async def test_unexpected_errors_are_internal_with_an_error_id(stub, caplog):
    with caplog.at_level(logging.ERROR, logger="planzoom.boundary"):
        e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="boom"), timeout=10))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in e.details() and "RuntimeError" not in e.details()
    error_id = e.details().rsplit(" ", 1)[1]
    (record,) = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert SECRET in str(record.exc_info[1]), "the log has what the caller does not"


@pytest.mark.parametrize("job_id,says", [("bus-away", "restarting"),
                                         ("bus-recovering", "restarting"),
                                         ("store-slowdown", "object store")])
async def test_a_dependency_away_is_unavailable_so_clients_retry(stub, job_id, says):
    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10))
    assert e.code() == grpc.StatusCode.UNAVAILABLE and says in e.details()


async def test_a_store_refusal_that_is_not_a_blip_stays_internal(stub):
    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="store-denied"), timeout=10))
    assert e.code() == grpc.StatusCode.INTERNAL


async def test_a_handlers_own_abort_passes_through(stub):
    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="abort"), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.ALREADY_EXISTS, "aborted by the handler")


async def test_streams_end_with_the_mapped_code_after_what_they_sent(stub):
    for job_id, code in (("0123", grpc.StatusCode.NOT_FOUND), ("boom", grpc.StatusCode.INTERNAL)):
        call = stub.WatchJob(progress_pb2.WatchJobRequest(job_id=job_id), timeout=10)
        first = await asyncio.wait_for(call.read(), 10)
        assert first.snapshot and first.job.job_id == job_id
        e = await _error(call.read())
        assert e.code() == code
        assert SECRET not in e.details()


def _forged(issuer: DevIssuer, **changes) -> str:
    """A token like the issuer's, with ``changes`` to its claims, signed by
    the issuer's key unless ``key`` is given."""
    claims = jwt.decode(issuer.mint("acme", "viewer"), options={"verify_signature": False})
    key = changes.pop("key", issuer._key)
    algorithm = changes.pop("algorithm", "RS256")
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key,
                      algorithm=algorithm)


async def test_health_needs_no_token(server):
    reply = await health_pb2_grpc.HealthStub(server).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("case", ["none", "not-bearer", "garbage", "expired", "other-key",
                                  "wrong-audience", "wrong-issuer", "no-exp", "alg-none",
                                  "hs256-with-public-key", "no-org", "bad-org", "no-role",
                                  "valid-for-a-century", "a-week-without-iat"])
async def test_bad_tokens_are_unauthenticated(server, issuer, case, tmp_path):
    other = DevIssuer(tmp_path)
    public = issuer.public_key_file.read_bytes()
    token = {
        "none": None,
        "garbage": "not.a.jwt",
        "expired": issuer.mint("acme", "viewer", ttl=-120),
        "other-key": other.mint("acme", "viewer"),
        "wrong-audience": _forged(issuer, aud="someone-else"),
        "wrong-issuer": _forged(issuer, iss="https://evil.example"),
        "no-exp": _forged(issuer, exp=None),
        "alg-none": _forged(issuer, key=None, algorithm="none"),
        "no-org": _forged(issuer, org=None),
        "bad-org": _forged(issuer, org="../etc"),
        "no-role": _forged(issuer, roles=["superuser"]),
        "valid-for-a-century": _forged(issuer, exp=int(time.time()) + 100 * 365 * 86400),
        "a-week-without-iat": _forged(issuer, iat=None, exp=int(time.time()) + 7 * 86400),
    }.get(case)
    metadata = (("authorization", f"Basic {issuer.mint('acme', 'viewer')}"),)
    if case == "hs256-with-public-key":  # key confusion: HMAC keyed with the public key
        header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = jwt.decode(issuer.mint("acme", "admin"), options={"verify_signature": False})
        body = jwt.utils.base64url_encode(json.dumps(claims).encode())
        signature = hmac.new(public, header + b"." + body, hashlib.sha256).digest()
        token = (header + b"." + body + b"." + jwt.utils.base64url_encode(signature)).decode()
    if case != "not-bearer":
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
    e = await _error(progress_pb2_grpc.ProgressServiceStub(server).GetJob(
        jobs_pb2.GetJobRequest(job_id="0123"), metadata=metadata, timeout=10))
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (case, e.details())
    assert len(e.details()) > 20


async def test_roles_are_checked_per_method(server, issuer):
    viewer = _Authorized(server, issuer.mint("acme", "viewer"))
    e = await _error(viewer.CancelJob(progress_pb2.CancelJobRequest(job_id="0123"), timeout=10))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "'admin' role" in e.details()
    admin = _Authorized(server, issuer.mint("acme", "admin", subject="ops@acme"))
    job = await admin.CancelJob(progress_pb2.CancelJobRequest(job_id="0123"), timeout=10)
    assert job.error == "ops@acme", "the handler sees the verified caller"


async def test_each_caller_has_its_own_rate(issuer):
    """A server allowing 5 calls a second per caller: a caller's sixth in a
    second is RESOURCE_EXHAUSTED RATE_LIMITED with a retry hint, another
    caller of the same org is served, and a second later the first is too."""
    settings = Settings(**{k.removeprefix("PLANZOOM_").lower(): v
                           for k, v in issuer.env().items()})
    roles = method_roles(progress_pb2.DESCRIPTOR.services_by_name["ProgressService"], {
        "GetJob": "viewer", "WatchJob": "viewer", "ListJobs": "viewer", "CancelJob": "admin",
        "Reconcile": "admin", "SetSheet": "uploader", "ListSheets": "viewer"})
    server = grpc.aio.server(interceptors=[RpcBoundary(TokenVerifier(settings), roles,
                                                       rate_per_second=5)])
    progress_pb2_grpc.add_ProgressServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            busy = _Authorized(channel, issuer.mint("acme", "viewer", subject="busy@acme"))
            calm = _Authorized(channel, issuer.mint("acme", "viewer", subject="calm@acme"))
            codes = []
            for _ in range(6):
                try:
                    await busy.GetJob(jobs_pb2.GetJobRequest(job_id="0123"), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as e:
                    codes.append(e.code())
                    last = e
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
            assert "slow down" in last.details()
            assert await _code_of(calm.GetJob(jobs_pb2.GetJobRequest(job_id="0123"), timeout=10)) \
                != grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(1.1)
            assert await _code_of(busy.GetJob(jobs_pb2.GetJobRequest(job_id="0123"), timeout=10)) \
                != grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)


async def _code_of(call) -> grpc.StatusCode:
    try:
        await call
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as e:
        return e.code()


def test_every_method_needs_a_declared_role():
    service = progress_pb2.DESCRIPTOR.services_by_name["ProgressService"]
    with pytest.raises(ValueError, match="methods"):
        method_roles(service, {"GetJob": "viewer"})


async def test_a_service_closes_its_connections_only_after_the_drain(issuer):
    """On SIGTERM ``serve`` stops the service's background work, lets the
    RPCs in flight finish, and only then closes what those RPCs use."""
    events: list[str] = []

    class Slow(progress_pb2_grpc.ProgressServiceServicer):
        async def GetJob(self, request, context):
            events.append("rpc started")
            await asyncio.sleep(1.0)
            events.append("rpc ended")
            return jobs_pb2.Job(job_id=request.job_id)

    class Draining(Service):
        name = "progress"

        def register(self, server):
            progress_pb2_grpc.add_ProgressServiceServicer_to_server(Slow(), server)
            return method_roles(progress_pb2.DESCRIPTOR.services_by_name["ProgressService"], {
                "GetJob": "viewer", "WatchJob": "viewer", "ListJobs": "viewer",
                "CancelJob": "admin", "Reconcile": "admin", "SetSheet": "uploader",
                "ListSheets": "viewer"})

        async def stop(self, grace: float) -> None:
            events.append("stop")

        async def close(self) -> None:
            events.append("close")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(**{k.removeprefix("PLANZOOM_").lower(): v
                           for k, v in issuer.env().items()}, grpc_grace_seconds=10)
    serving = asyncio.create_task(serve(Draining(), settings, f"127.0.0.1:{port}"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)  # a service that never starts fails
        call = _Authorized(channel, issuer.mint("acme", "viewer")).GetJob(
            jobs_pb2.GetJobRequest(job_id="0123"), timeout=10)
        while "rpc started" not in events:
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        assert (await call).job_id == "0123", "the RPC in flight was drained, not cut"
    await asyncio.wait_for(serving, 20)
    assert events == ["rpc started", "stop", "rpc ended", "close"]
