"""planzoom's one error hierarchy.

Every error planzoom raises on purpose is a :class:`PlanzoomError`. Its class
fixes the gRPC status code a caller gets (``code``) and whether doing the
same work again can help (``retryable``); an instance adds a ``reason`` (a
stable UPPER_SNAKE_CASE cause a program can branch on), optionally the
request ``field`` that was wrong, and a message a person can act on.

Reasons form one closed catalogue: the ``Reason`` enum of
``protos/planzoom/v1/reasons.proto`` (docs/reasons.md is its table). A class
or an error naming a reason that is not in it is a bug, refused at once
(ValueError), so no reason reaches a caller undocumented.

Where they go:

- An RPC: :mod:`planzoom.boundary` turns the error into its status code with
  a ``google.rpc.BadRequest`` detail (when ``field`` is set) or a
  ``google.rpc.ErrorInfo`` detail (otherwise), domain ``planzoom``
  (https://google.aip.dev/193). Anything that is not a PlanzoomError becomes
  INTERNAL with an error id that is also logged; its text never reaches a
  caller.
- An HTTP request: the gateway's handlers (services/gateway/problems.py)
  turn it into an RFC 9457 problem document with the same reason; the
  gateway's own HTTP-only answers (a tus offset conflict, 409) are
  :class:`PlanzoomError` too, with an ``http_status``.
- A page job: :class:`planzoom.messaging.worker.PullWorker` retries a
  retryable error (or any unexpected exception) with backoff and fails the
  page at once for one that is not; the page's record keeps the message
  and the reason (``PageRecord.error``, ``.reason``).

The classes follow gotenberg's error types and OCRmyPDF's exceptions: a
small fixed set, one per way a caller should react.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from planzoom.v1.reasons_pb2 import Reason

DOMAIN = "planzoom"


def reason_code(name: str) -> int:
    """The ``Reason`` value of reason ``name`` (``"PDF_DAMAGED"``). Raises
    ValueError for a name that is not in the catalogue."""
    try:
        return Reason.Value(f"REASON_{name}")
    except ValueError:
        raise ValueError(f"reason {name!r} is not in the catalogue "
                         "(protos/planzoom/v1/reasons.proto, docs/reasons.md)") from None


def reason_name(code: int) -> str:
    """The name of a ``Reason`` value (``"PDF_DAMAGED"``); ``""`` for
    UNSPECIFIED or a value this build does not know."""
    try:
        return "" if code == Reason.REASON_UNSPECIFIED else \
            Reason.Name(code).removeprefix("REASON_")
    except ValueError:
        return ""


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> PlanzoomError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class PlanzoomError(Exception):
    """Base of every error planzoom raises on purpose.

    ``message`` is shown to the caller as it is: say what is wrong and what
    to do, never internal detail. ``reason`` defaults to the class's;
    ``retryable`` to the class's.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    retryable: bool = False
    #: The HTTP status of an answer no gRPC code names (a tus offset
    #: conflict is 409, an expired upload 410); None: the code's.
    http_status: int | None = None

    def __init_subclass__(cls, code: grpc.StatusCode | None = None,
                          retryable: bool | None = None, **kwargs):
        """``class X(PlanzoomError, code=…, retryable=…)``: a kind of error
        with its status code; its reason is the code's name unless the class
        sets another."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
            if "reason" not in cls.__dict__:
                cls.reason = code.name
        if retryable is not None:
            cls.retryable = retryable
        reason_code(cls.reason)

    def __init__(self, message: str, *, reason: str | None = None, field: str | None = None,
                 retryable: bool | None = None, retry_after: float | None = None,
                 http_status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after  # seconds a caller should wait before trying again
        if reason is not None:
            reason_code(reason)
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable
        if http_status is not None:
            self.http_status = http_status
        self.headers = headers or {}  # HTTP headers of its answer (tus's, Retry-After)

    @property
    def reason_code(self) -> int:
        """The ``Reason`` value of :attr:`reason`."""
        return reason_code(self.reason)

    def __reduce__(self):
        # Raised in worker processes (PDFium, libvips) and pickled back to the
        # service: keep reason, field and retryable across the pipe.
        return _rebuild, (type(self), self.message, dict(self.__dict__))

    def to_status(self, metadata: dict[str, str] | None = None) -> grpc.Status:
        """The gRPC status for this error with its ``google.rpc`` details:
        BadRequest (a field was wrong) or ErrorInfo, and RetryInfo when the
        caller should come back after ``retry_after`` seconds."""
        detail = any_pb2.Any()
        if self.field:
            detail.Pack(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=self.field, description=self.message, reason=self.reason)
            ]))
        else:
            detail.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN,
                                                    metadata=metadata or {}))
        details = [detail]
        if self.retry_after is not None:
            retry = any_pb2.Any()
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(int(self.retry_after * 1e9))
            retry.Pack(info)
            details.append(retry)
        return rpc_status.to_status(status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=self.message, details=details))


class InvalidInput(PlanzoomError, ValueError, code=grpc.StatusCode.INVALID_ARGUMENT):
    """The request or the file is wrong; sending it again will not help."""


class NotFound(PlanzoomError, LookupError, code=grpc.StatusCode.NOT_FOUND):
    """What the request names does not exist."""


class FailedPrecondition(PlanzoomError, code=grpc.StatusCode.FAILED_PRECONDITION):
    """The request is well formed but the state of things refuses it (an
    ended job, an encrypted file): change that state first."""


class ResourceExhausted(PlanzoomError, code=grpc.StatusCode.RESOURCE_EXHAUSTED):
    """Over a limit or quota; the message names the limit."""


class Unauthenticated(PlanzoomError, code=grpc.StatusCode.UNAUTHENTICATED):
    """No bearer token, or one that does not verify (expired, another
    issuer or audience, a bad signature, no org or role)."""


class PermissionDenied(PlanzoomError, code=grpc.StatusCode.PERMISSION_DENIED):
    """A verified caller asked for what its org or role does not allow."""


class Unavailable(PlanzoomError, code=grpc.StatusCode.UNAVAILABLE, retryable=True):
    """A dependency or the service itself cannot serve right now; retry
    with backoff."""


class Timeout(PlanzoomError, code=grpc.StatusCode.DEADLINE_EXCEEDED, retryable=True):
    """The work took longer than its limit."""

    reason = "TIMEOUT"


class Cancelled(PlanzoomError, code=grpc.StatusCode.CANCELLED):
    """The work was cancelled (its job was)."""


class Internal(PlanzoomError, code=grpc.StatusCode.INTERNAL, retryable=True):
    """Something of planzoom's own failed (a worker process died, an
    invariant broke). Retrying may help; the log has the details."""


def internal_status(error_id: str) -> grpc.Status:
    """The status a caller gets for an unexpected exception: INTERNAL, an
    error id to quote (it is in the service's log), no exception text."""
    return Internal(f"internal error; the service log has the details under error id {error_id}"
                    ).to_status(metadata={"error_id": error_id})
