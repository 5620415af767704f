"""gRPC errors with a ``google.rpc`` detail a client can act on.

Invalid fields carry ``google.rpc.BadRequest`` field violations; other
refusals carry ``google.rpc.ErrorInfo`` with a ``reason`` in UPPER_SNAKE_CASE
and domain ``planzoom``. Source: https://google.aip.dev/193.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from planzoom.ids import InvalidId, check_id
from planzoom.v1 import jobs_pb2

DOMAIN = "planzoom"


class RequestError(Exception):
    """A request refused with ``code``; ``field`` names a bad request field,
    ``reason`` is a stable machine-readable cause."""

    def __init__(self, code: grpc.StatusCode, message: str, *, field: str | None = None,
                 reason: str = "INVALID_REQUEST"):
        super().__init__(message)
        self.code, self.message, self.field, self.reason = code, message, field, reason

    def to_status(self) -> grpc.Status:
        detail = any_pb2.Any()
        if self.field:
            detail.Pack(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=self.field, description=self.message, reason=self.reason)
            ]))
        else:
            detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        return rpc_status.to_status(status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=self.message, details=[detail]
        ))


def invalid(message: str, field: str | None = None, reason: str = "INVALID_ARGUMENT"
            ) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message, field=field, reason=reason)


def check_plan(plan: jobs_pb2.PlanRef) -> None:
    """Raise an INVALID_ARGUMENT RequestError (a BadRequest on ``plan.<id>``)
    unless org, project and plan are valid ids."""
    for field in ("org", "project", "plan"):
        try:
            check_id(field, getattr(plan, field))
        except InvalidId as e:
            raise invalid(str(e), field=f"plan.{field}", reason="INVALID_ID") from None


def job_not_found(job_id: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, f"no job with id {job_id!r}",
                        reason="JOB_NOT_FOUND")


async def abort(context: grpc.aio.ServicerContext, err: RequestError) -> None:
    """Abort the RPC with ``err`` (raises)."""
    await context.abort_with_status(err.to_status())
