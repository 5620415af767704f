"""The one place where a caller is checked and an RPC's errors become gRPC
statuses.

:class:`RpcBoundary` is a ``grpc.aio`` server interceptor that wraps every
handler of a server (unary and streaming alike):

- unless the method is public (health), the caller's bearer token is
  verified (:class:`planzoom.auth.TokenVerifier`) and its role checked
  against the role the method needs; the :class:`~planzoom.auth.Caller` is
  then what :func:`planzoom.auth.current` returns inside the handler. A
  method nobody declared a role for needs ``admin`` (fail closed);
- a caller (org and subject) may make ``rate_per_second`` calls a second
  on this server (a moving window, ``limits``); beyond that
  RESOURCE_EXHAUSTED ``RATE_LIMITED`` with a RetryInfo of one second;
- a :class:`~planzoom.errors.PlanzoomError` ends the RPC with its status
  code, message and ``google.rpc`` detail (BadRequest or ErrorInfo);
- NATS away for the moment (a timeout, a closed or reconnecting
  connection, no JetStream responder, JetStream recovering) or the object
  store not answering once its client's retries are spent (no connection,
  a timeout, 5xx or SlowDown) ends it with UNAVAILABLE, which clients
  retry: a server restart is not the caller's problem;
- any other exception ends it with INTERNAL and an error id; the exception
  and its traceback are logged under that id, and no text of it reaches
  the caller;
- every refusal is counted in ``planzoom_rpc_errors_total`` by method and
  code.

Handlers raise; they never call ``context.abort`` for a domain error.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

import grpc
from boto3.exceptions import S3UploadFailedError
from botocore import exceptions as botocore_errors
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from nats import errors as nats_errors
from nats.js import errors as nats_js_errors

from planzoom import auth, metrics
from planzoom.errors import (
    PermissionDenied,
    PlanzoomError,
    ResourceExhausted,
    Unavailable,
    internal_status,
)

log = logging.getLogger(__name__)

#: Methods anyone may call: Kubernetes probes carry no token.
PUBLIC = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
#: What a method nobody declared a role for needs.
UNDECLARED_ROLE = "admin"


#: NATS errors that mean "not reachable right now": the connection is down
#: or coming back, or JetStream answers 503 while it recovers its streams
#: after a restart.
_NATS_AWAY = (nats_errors.TimeoutError, nats_errors.ConnectionClosedError,
              nats_errors.ConnectionReconnectingError, nats_errors.NoRespondersError,
              nats_errors.NoServersError, nats_errors.UnexpectedEOF,
              nats_errors.StaleConnectionError, nats_js_errors.ServiceUnavailableError,
              nats_js_errors.NoStreamResponseError)


#: botocore/boto3 errors that mean "the object store is not answering" once
#: their own retries are spent: no connection, a timeout, a dropped one.
_STORE_UNREACHABLE = (botocore_errors.EndpointConnectionError,
                      botocore_errors.ConnectionClosedError,
                      botocore_errors.ReadTimeoutError, botocore_errors.ConnectTimeoutError,
                      S3UploadFailedError)


def _store_away(error: Exception) -> bool:
    """The object store is unreachable, or answered 5xx (SlowDown, ...)."""
    if isinstance(error, _STORE_UNREACHABLE):
        return True
    if isinstance(error, botocore_errors.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or error.response.get("Error", {}).get("Code") == "SlowDown"
    return False


def outage(error: Exception) -> Unavailable | None:
    """``error`` as the Unavailable it means when a dependency is away (NATS
    restarting or electing leaders, the object store not answering), else
    None: an RPC answers it UNAVAILABLE, a page job is tried again later,
    and neither is an unexpected error."""
    if isinstance(error, _NATS_AWAY):
        return Unavailable("the message bus is restarting; try again in a moment",
                           reason="BUS_UNAVAILABLE", retry_after=1.0)
    if _store_away(error):
        return Unavailable("the object store is not answering; try again in a moment",
                           reason="STORE_UNAVAILABLE", retry_after=2.0)
    return None


async def _refuse(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
    """End the RPC for ``error`` (raises grpc's abort exception)."""
    away = outage(error)
    if away is not None:
        log.warning("%s: %s: %r", method, away.reason, error)
        error = away
    if isinstance(error, PlanzoomError):
        metrics.RPC_ERRORS.labels(method, error.code.name).inc()
        log.info("%s refused: %s", method, error.message,
                 extra={"code": error.code.name, "reason": error.reason})
        await context.abort_with_status(error.to_status())
    error_id = uuid.uuid4().hex[:16]
    metrics.RPC_ERRORS.labels(method, grpc.StatusCode.INTERNAL.name).inc()
    log.error("%s failed", method, exc_info=error, extra={"error_id": error_id})
    await context.abort_with_status(internal_status(error_id))


def _is_grpc_control(error: BaseException) -> bool:
    """grpc's own abort, raised by ``context.abort``: pass it through."""
    return isinstance(error, grpc.aio.AbortError)


class RpcBoundary(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes and maps errors for every RPC of a server.

    ``verifier`` checks tokens; ``roles`` maps full method names
    (``/planzoom.v1.ProgressService/GetJob``) to the role each needs; it may
    be filled after the boundary is built, as services register.
    """

    def __init__(self, verifier: auth.TokenVerifier, roles: Mapping[str, str] | None = None,
                 rate_per_second: int = 0):
        self.verifier = verifier
        self.roles = dict(roles or {})
        self.rate = RateLimitItemPerSecond(rate_per_second) if rate_per_second else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def _admit(self, method: str, context: grpc.aio.ServicerContext):
        """Set the caller of ``method`` (a context token to reset), or None
        for a public method. Raises Unauthenticated or PermissionDenied."""
        if method in PUBLIC:
            return None
        metadata = dict(context.invocation_metadata() or ())
        caller = self.verifier.verify(metadata.get("authorization"))
        if self.rate and not self.limiter.hit(self.rate, caller.org, caller.subject):
            raise ResourceExhausted(f"more than {self.rate.amount} calls a second from "
                                    f"{caller.subject}; slow down", reason="RATE_LIMITED",
                                    retry_after=1.0)
        role = self.roles.get(method, UNDECLARED_ROLE)
        if not caller.may(role):
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs the {role!r} role; "
                                   f"{caller.subject} has {caller.role!r}")
        return auth.set_current(caller)

    def _wrap_unary(self, method: str, behaviour: Callable[..., Awaitable]):
        async def handler(request, context):
            try:
                self._admit(method, context)
                return await behaviour(request, context)
            except Exception as e:
                if _is_grpc_control(e):
                    raise
                await _refuse(context, method, e)

        return handler

    def _wrap_streaming(self, method: str, behaviour: Callable):
        if not inspect.isasyncgenfunction(behaviour):  # writes with context.write()
            return self._wrap_unary(method, behaviour)

        async def handler(request, context):
            try:
                self._admit(method, context)
                async for response in behaviour(request, context):
                    yield response
            except Exception as e:
                if _is_grpc_control(e):
                    raise
                await _refuse(context, method, e)

        return handler

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_streaming(method, handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_streaming(method, handler.stream_stream), **kwargs)


def method_roles(service_descriptor, roles: Mapping[str, str]) -> dict[str, str]:
    """Full method names of one gRPC service mapped to their roles; raises
    ValueError unless ``roles`` names every method of the service, so a new
    RPC cannot ship without a decision about who may call it."""
    methods = {m.name for m in service_descriptor.methods}
    if set(roles) != methods:
        raise ValueError(f"{service_descriptor.full_name}: roles for {sorted(set(roles))}, "
                         f"methods {sorted(methods)}")
    return {f"/{service_descriptor.full_name}/{name}": role for name, role in roles.items()}
