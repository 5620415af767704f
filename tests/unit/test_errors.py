"""The error hierarchy: codes, retryability, details, and errors that cross
a process boundary intact."""

from __future__ import annotations

import pickle

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from planzoom.engines.pdf import PageUnrenderable, PdfDamaged, PdfEncrypted
from planzoom.engines.raster import RasterUnreadable
from planzoom.engines.sandbox import WorkerCrashed
from planzoom.errors import (
    Cancelled,
    FailedPrecondition,
    Internal,
    InvalidInput,
    NotFound,
    PlanzoomError,
    ResourceExhausted,
    Timeout,
    Unavailable,
    internal_status,
)
from planzoom.ids import InvalidId, check_plan
from planzoom.jobstore import Conflict, JobNotFound
from planzoom.messaging.worker import is_permanent
from planzoom.v1 import jobs_pb2
from services.tile.put_pool import TilePutFailed


def _details(status: grpc.Status):
    (key, value), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize("error,code,permanent", [
    (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT, True),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND, True),
    (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION, True),
    (ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, True),
    (Unavailable("x"), grpc.StatusCode.UNAVAILABLE, False),
    (Timeout("x"), grpc.StatusCode.DEADLINE_EXCEEDED, False),
    (Cancelled("x"), grpc.StatusCode.CANCELLED, True),
    (Internal("x"), grpc.StatusCode.INTERNAL, False),
    # the domain errors the services raise
    (JobNotFound("j"), grpc.StatusCode.NOT_FOUND, True),
    (Conflict("k"), grpc.StatusCode.UNAVAILABLE, False),
    (PageUnrenderable("page"), grpc.StatusCode.INVALID_ARGUMENT, True),
    (RasterUnreadable("raster"), grpc.StatusCode.INVALID_ARGUMENT, True),
    (TilePutFailed("put"), grpc.StatusCode.UNAVAILABLE, False),
    (WorkerCrashed("died"), grpc.StatusCode.INTERNAL, False),
    (PdfEncrypted("pw"), grpc.StatusCode.FAILED_PRECONDITION, True),
    (PdfDamaged("bad"), grpc.StatusCode.INVALID_ARGUMENT, True),
    (RuntimeError("unexpected"), None, False),
])
def test_codes_and_what_a_page_job_does(error, code, permanent):
    if code is not None:
        assert isinstance(error, PlanzoomError) and error.code == code
    assert is_permanent(error) == permanent


def test_a_field_error_carries_bad_request_and_others_error_info():
    with pytest.raises(InvalidId) as e:
        check_plan(jobs_pb2.PlanRef(org="a/b", project="p", plan="l"))
    details = _details(e.value.to_status())
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = error_details_pb2.BadRequest()
    assert details.details[0].Unpack(bad)
    (violation,) = bad.field_violations
    assert (violation.field, violation.reason) == ("plan.org", "INVALID_ID")
    assert "'a/b' is not a valid id" in violation.description

    details = _details(JobNotFound("0123").to_status())
    info = error_details_pb2.ErrorInfo()
    assert details.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("JOB_NOT_FOUND", "planzoom")
    assert details.message == "no job with id '0123'"


def test_internal_status_says_only_the_error_id():
    status = internal_status("abc123")
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == ("internal error; the service log has the details under "
                              "error id abc123")
    info = error_details_pb2.ErrorInfo()
    assert _details(status).details[0].Unpack(info) and info.metadata["error_id"] == "abc123"


@pytest.mark.parametrize("error", [
    InvalidInput("bad", reason="NO_SUCH_PAGE", field="f", retryable=True),
    PdfDamaged("page 3 has an empty page box"),
    InvalidId("plan.org", "a/b"),
    JobNotFound("0123"),
])
def test_errors_survive_pickling(error):
    """Raised in a worker process, they reach the service whole."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.message, back.reason, back.field, back.retryable, back.code) == (
        error.message, error.reason, error.field, error.retryable, error.code)
    assert str(back) == str(error)
