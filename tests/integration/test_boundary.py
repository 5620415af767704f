"""The one gRPC error boundary, on a real grpc.aio server on 127.0.0.1:
domain errors become their status codes with details, anything unexpected
becomes INTERNAL with an error id (logged, never the exception's text), and
streaming RPCs end the same way after what they already sent."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_status import rpc_status

from planzoom import metrics
from planzoom.boundary import RpcBoundary
from planzoom.ids import check_id
from planzoom.jobstore import JobNotFound
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc

SECRET = "/srv/internal/secret-path.db"


class Servicer(progress_pb2_grpc.ProgressServiceServicer):
    """ProgressService whose RPCs fail in the ways the boundary must map."""

    async def GetJob(self, request, context):
        check_id("job_id", request.job_id)  # InvalidId for a bad one
        if request.job_id == "boom":
            raise RuntimeError(f"cannot open {SECRET}")
        if request.job_id == "abort":
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "aborted by the handler")
        raise JobNotFound(request.job_id)

    async def WatchJob(self, request, context):
        yield jobs_pb2.Job(job_id=request.job_id)
        if request.job_id == "boom":
            raise KeyError(SECRET)
        raise JobNotFound(request.job_id)


@pytest.fixture
async def stub():
    server = grpc.aio.server(interceptors=[RpcBoundary()])
    progress_pb2_grpc.add_ProgressServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield progress_pb2_grpc.ProgressServiceStub(channel)
    await channel.close()
    await server.stop(0)


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


async def test_a_handlers_own_abort_passes_through(stub):
    e = await _error(stub.GetJob(jobs_pb2.GetJobRequest(job_id="abort"), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.ALREADY_EXISTS, "aborted by the handler")


async def test_streams_end_with_the_mapped_code_after_what_they_sent(stub):
    for job_id, code in (("0123", grpc.StatusCode.NOT_FOUND), ("boom", grpc.StatusCode.INTERNAL)):
        call = stub.WatchJob(progress_pb2.WatchJobRequest(job_id=job_id), timeout=10)
        first = await asyncio.wait_for(call.read(), 10)
        assert first.job_id == job_id
        e = await _error(call.read())
        assert e.code() == code
        assert SECRET not in e.details()
