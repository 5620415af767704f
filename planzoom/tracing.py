"""OpenTelemetry traces across the services: one trace per submitted job.

A trace starts at the RPC (the gRPC server span of ``Upload`` or
``SubmitJob``; the gateway's HTTP request when it comes through the
gateway), and its context travels in the headers of every JetStream message
planzoom publishes (W3C Trace Context, ``traceparent``). Each worker that
takes a message opens a consumer span under it (render a page, tile it, fold
a progress event) and so passes it on; the job's end is a span in progress.

Off by default. The standard environment variables configure it (see the
OpenTelemetry SDK's "General SDK Configuration" and OTLP exporter pages):
it is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (OTLP over HTTP/protobuf), or
``OTEL_TRACES_EXPORTER=console``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keeps it off. ``OTEL_SERVICE_NAME`` defaults
to ``planzoom-<service>``; ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and
``OTEL_RESOURCE_ATTRIBUTES`` work as usual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace

log = logging.getLogger(__name__)

tracer = trace.get_tracer("planzoom")

_provider = None


def _exporters(env: Mapping[str, str]) -> set[str]:
    """The exporters OTEL_TRACES_EXPORTER names (comma-separated; default otlp)."""
    names = env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
    return {n.strip() for n in names} - {"", "none"}


def enabled_by_env(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(env)
    if "console" in exporters:
        return True
    return "otlp" in exporters and bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service: str) -> None:
    """Install the SDK's tracer provider for ``service`` if the environment
    asks for traces (see :func:`active`)."""
    global _provider
    if _provider is not None or not enabled_by_env():
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or f"planzoom-{service}"
    _provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporters = _exporters(os.environ)
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in exporters:
        _provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(_provider)
    log.info("tracing on: service %s, exporters %s", name, ",".join(sorted(exporters)))


def active() -> bool:
    """Whether :func:`setup` installed the SDK (spans are being exported)."""
    return _provider is not None


def shutdown() -> None:
    """Export the spans still buffered (at the end of a process)."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list:
    """gRPC aio server interceptors that open a server span per RPC (joining
    a caller's ``traceparent`` metadata), or none when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    return [aio_server_interceptor()]


def client_interceptors() -> list:
    """gRPC aio client interceptors that send the current trace along."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors
    return list(aio_client_interceptors())


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to message ``headers`` (in place)."""
    propagate.inject(headers)
    return headers


def annotate(**attributes) -> None:
    """Set ``planzoom.<name>`` attributes (job id, page) on the current span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"planzoom.{k}": v for k, v in attributes.items()})


@contextmanager
def consuming(name: str, headers: Mapping[str, str] | None, **attributes) -> Iterator[None]:
    """A consumer span ``name`` for a message, a child of the span that
    published it (its ``traceparent`` header), current for the block."""
    context = propagate.extract(dict(headers or {}))
    with tracer.start_as_current_span(name, context=context, kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes):
        yield
