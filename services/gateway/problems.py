"""The HTTP side of planzoom's one error boundary: every error a route
raises becomes an RFC 9457 problem document (``application/problem+json``).

- a :class:`~planzoom.errors.PlanzoomError` keeps its message and reason;
  its gRPC code picks the HTTP status (:data:`HTTP_STATUS`);
- an error of an upstream gRPC call (the caller's token refused by ingest,
  an unknown job at progress) is mapped the same way, with the reason from
  its ``google.rpc.ErrorInfo`` detail;
- a request that fails validation is 400 with the offending fields;
- anything else is 500 with an error id that is also logged; its text never
  reaches the client.

Body: ``{"type": "about:blank", "title": <HTTP reason phrase>, "status":
<int>, "detail": <message>, "reason": <UPPER_SNAKE_CASE>, "instance":
<request path>}`` plus ``errors`` (validation) or ``error_id`` (internal).
"""

from __future__ import annotations

import http
import logging
import uuid

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from starlette.exceptions import HTTPException

from planzoom.errors import PlanzoomError

log = logging.getLogger(__name__)

#: gRPC status → HTTP status (after google.rpc.Code's HTTP mapping, with 409
#: for a state that refuses the request).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
PROBLEM = "application/problem+json"


def problem(request: Request, status: int, detail: str, reason: str,
            headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """An RFC 9457 problem response; errors are never cached."""
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Client Closed Request" if status == 499 else "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "reason": reason, "instance": request.url.path, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM,
                        headers={"Cache-Control": "no-store", **(headers or {})})


class Problem(Exception):
    """An HTTP answer no gRPC code names (a tus offset conflict is 409, an
    expired upload 410, a locked one 423): status, reason, message and
    headers as given."""

    def __init__(self, status: int, message: str, reason: str,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.headers = headers or {}


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))} if seconds else {}


def rpc_reason(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    status = rpc_status.from_call(error) if error.trailing_metadata() else None
    reason, retry = error.code().name, None
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(retry_info):
            retry = retry_info.retry_delay.ToNanoseconds() / 1e9
    return reason, retry


def install(app: FastAPI) -> None:
    """Register the problem handlers on ``app``."""

    @app.exception_handler(PlanzoomError)
    async def planzoom_error(request: Request, error: PlanzoomError):
        status = HTTP_STATUS.get(error.code, 500)
        extra = {"field": error.field} if error.field else {}
        return problem(request, status, error.message, error.reason,
                       _retry_after(error.retry_after), **extra)

    @app.exception_handler(Problem)
    async def http_problem(request: Request, error: Problem):
        return problem(request, error.status, error.message, error.reason, error.headers)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def rpc_error(request: Request, error: grpc.aio.AioRpcError):
        status = HTTP_STATUS.get(error.code())
        if status is None:  # INTERNAL, UNKNOWN, DATA_LOSS: the upstream's text stays there
            return await unexpected(request, error)
        reason, retry = rpc_reason(error)
        return problem(request, status, error.details() or error.code().name, reason,
                       _retry_after(retry))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                  for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(request, 400, detail or "the request is not valid", "INVALID_ARGUMENT",
                       errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code,
                                                                   "HTTP_ERROR")
        return problem(request, error.status_code, str(error.detail), reason,
                       dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        error_id = uuid.uuid4().hex[:16]
        log.error("%s %s failed", request.method, request.url.path, exc_info=error,
                  extra={"error_id": error_id})
        return problem(request, 500, "internal error; the gateway log has the details under "
                       f"error id {error_id}", "INTERNAL", error_id=error_id)
