"""The one place where an RPC's errors become gRPC statuses.

:class:`RpcBoundary` is a ``grpc.aio`` server interceptor that wraps every
handler of a server (unary and streaming alike):

- a :class:`~planzoom.errors.PlanzoomError` ends the RPC with its status
  code, message and ``google.rpc`` detail (BadRequest or ErrorInfo);
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
from collections.abc import Awaitable, Callable

import grpc

from planzoom import metrics
from planzoom.errors import PlanzoomError, internal_status

log = logging.getLogger(__name__)


async def _refuse(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
    """End the RPC for ``error`` (raises grpc's abort exception)."""
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


def _wrap_unary(method: str, behaviour: Callable[..., Awaitable]):
    async def handler(request, context):
        try:
            return await behaviour(request, context)
        except Exception as e:
            if _is_grpc_control(e):
                raise
            await _refuse(context, method, e)

    return handler


def _wrap_streaming(method: str, behaviour: Callable):
    if not inspect.isasyncgenfunction(behaviour):  # writes with context.write()
        return _wrap_unary(method, behaviour)

    async def handler(request, context):
        try:
            async for response in behaviour(request, context):
                yield response
        except Exception as e:
            if _is_grpc_control(e):
                raise
            await _refuse(context, method, e)

    return handler


class RpcBoundary(grpc.aio.ServerInterceptor):
    """Maps handler errors to statuses for every RPC of a server."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_streaming(method, handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_streaming(method, handler.stream_stream), **kwargs)
