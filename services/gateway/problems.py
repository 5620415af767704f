"""The HTTP side of planzoom's one error boundary: every error a route
raises, and every error a live event stream meets, becomes one RFC 9457
problem document (``application/problem+json``) through :func:`to_problem`.

- a :class:`~planzoom.errors.PlanzoomError` keeps its message and reason;
  its ``http_status`` (the gateway's HTTP-only answers: :class:`Problem`),
  else its gRPC code, picks the HTTP status (:data:`HTTP_STATUS`);
- an error of an upstream gRPC call (the caller's token refused by ingest,
  an unknown job at progress) is mapped the same way, with the reason from
  its ``google.rpc.ErrorInfo`` detail;
- a request that fails validation is 400 with the offending fields;
- anything else is 500 with an error id that is also logged; its text never
  reaches the client.

Body: ``{"type": "about:blank", "title": <HTTP reason phrase>, "status":
<int>, "detail": <message>, "reason": <a reason of the catalogue,
docs/reasons.md>, "instance": <request path>}`` plus ``field`` (the request
field that was wrong), ``errors`` (validation) or ``error_id`` (internal).
Every problem is counted in ``planzoom_http_errors_total`` by route,
status and reason.
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

from planzoom import metrics
from planzoom.errors import PlanzoomError, reason_code

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
#: The kind of error an HTTP-only status is (its gRPC code), for
#: :class:`Problem`.
_CODE_OF_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
                   405: grpc.StatusCode.INVALID_ARGUMENT, 409: grpc.StatusCode.FAILED_PRECONDITION,
                   410: grpc.StatusCode.NOT_FOUND, 412: grpc.StatusCode.FAILED_PRECONDITION,
                   413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                   415: grpc.StatusCode.INVALID_ARGUMENT, 423: grpc.StatusCode.UNAVAILABLE}
#: The reason of an error that names none of the catalogue's: its kind's.
_KIND_REASON = {grpc.StatusCode.OUT_OF_RANGE: "INVALID_ARGUMENT",
                grpc.StatusCode.ALREADY_EXISTS: "FAILED_PRECONDITION",
                grpc.StatusCode.ABORTED: "FAILED_PRECONDITION",
                grpc.StatusCode.DEADLINE_EXCEEDED: "TIMEOUT",
                grpc.StatusCode.UNIMPLEMENTED: "INTERNAL"}
PROBLEM = "application/problem+json"


class Problem(PlanzoomError):
    """An HTTP answer no gRPC code names (a tus offset conflict is 409, an
    expired upload 410, a locked one 423): the status, a reason of the
    catalogue, the message and headers as given. Its kind (gRPC code,
    retryable) follows from the status."""

    def __init__(self, status: int, message: str, reason: str,
                 headers: dict[str, str] | None = None):
        super().__init__(message, reason=reason, http_status=status, headers=headers)
        self.code = _CODE_OF_STATUS.get(status, grpc.StatusCode.INVALID_ARGUMENT)
        self.retryable = self.code == grpc.StatusCode.UNAVAILABLE


def known_reason(reason: str, code: grpc.StatusCode) -> str:
    """``reason`` if the catalogue has it, else the reason of ``code``'s
    kind (a reason an upstream answer carries is checked, never passed on
    blindly)."""
    try:
        reason_code(reason)
        return reason
    except ValueError:
        return _KIND_REASON.get(code, code.name if code in HTTP_STATUS else "INTERNAL")


def problem_body(path: str, status: int, detail: str, reason: str, **extra) -> dict:
    """An RFC 9457 problem document."""
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Client Closed Request" if status == 499 else "Error"
    return {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "reason": reason, "instance": path, **extra}


def rpc_reason(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """The catalogue reason and the RetryInfo delay (seconds) of an
    upstream gRPC error."""
    status = rpc_status.from_call(error) if error.trailing_metadata() else None
    reason, retry = error.code().name, None
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
        violations = error_details_pb2.BadRequest()
        if detail.Unpack(violations) and violations.field_violations:
            reason = violations.field_violations[0].reason or reason
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(retry_info):
            retry = retry_info.retry_delay.ToNanoseconds() / 1e9
    return known_reason(reason, error.code()), retry


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))} if seconds else {}


def to_problem(request: Request, error: BaseException) -> tuple[int, dict, dict[str, str]]:
    """The one mapping of any error to (HTTP status, problem document,
    headers), counted in ``planzoom_http_errors_total``; an unexpected
    error is logged with the id its document names."""
    path = request.url.path
    if isinstance(error, PlanzoomError):
        status = error.http_status or HTTP_STATUS.get(error.code, 500)
        extra = {"field": error.field} if error.field else {}
        body = problem_body(path, status, error.message, error.reason, **extra)
        headers = {**_retry_after(error.retry_after), **error.headers}
    elif isinstance(error, grpc.aio.AioRpcError) and error.code() in HTTP_STATUS:
        # INTERNAL, UNKNOWN, DATA_LOSS fall through: the upstream's text stays there.
        status = HTTP_STATUS[error.code()]
        reason, retry = rpc_reason(error)
        body = problem_body(path, status, error.details() or error.code().name, reason)
        headers = _retry_after(retry)
    elif isinstance(error, RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                  for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        status = 400
        body = problem_body(path, status, detail or "the request is not valid",
                            "INVALID_ARGUMENT", errors=errors)
        headers = {}
    elif isinstance(error, HTTPException):
        status = error.status_code
        code = _CODE_OF_STATUS.get(status, grpc.StatusCode.INVALID_ARGUMENT)
        reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, _KIND_REASON.get(
            code, code.name))
        body = problem_body(path, status, str(error.detail), reason)
        headers = dict(error.headers or {})
    else:
        error_id = uuid.uuid4().hex[:16]
        log.error("%s %s failed", request.method, path, exc_info=error,
                  extra={"error_id": error_id})
        status = 500
        body = problem_body(path, status, "internal error; the gateway log has the details "
                            f"under error id {error_id}", "INTERNAL", error_id=error_id)
        headers = {}
    route = getattr(request.scope.get("route"), "path", "unmatched")
    metrics.HTTP_ERRORS.labels(route, str(status), body["reason"]).inc()
    return status, body, headers


def respond(request: Request, error: BaseException) -> JSONResponse:
    """The problem response for ``error`` (:func:`to_problem`); errors are
    never cached."""
    status, body, headers = to_problem(request, error)
    return JSONResponse(body, status_code=status, media_type=PROBLEM,
                        headers={"Cache-Control": "no-store", **headers})


def install(app: FastAPI) -> None:
    """Register the problem handler on ``app`` for every kind of error."""

    async def handler(request: Request, error: Exception) -> JSONResponse:
        return respond(request, error)

    for kind in (PlanzoomError, grpc.aio.AioRpcError, RequestValidationError, HTTPException,
                 Exception):
        app.add_exception_handler(kind, handler)
