"""The gRPC server every service runs, and the process lifecycle around it.

Each server registers the standard health service (``grpc.health.v1``, no
token needed, so Kubernetes probes work), server reflection only when
``PLANZOOM_GRPC_REFLECTION`` is on, and runs every RPC through
:class:`planzoom.boundary.RpcBoundary` (identity, roles, errors). It speaks
TLS when ``PLANZOOM_TLS_CERT_FILE`` and ``PLANZOOM_TLS_KEY_FILE`` are set;
``PLANZOOM_HEALTH_ADDR`` adds a plaintext listener with the health service
alone, because the kubelet's gRPC probes cannot speak TLS.
Messages larger than ``PLANZOOM_GRPC_MAX_RECEIVE_BYTES`` are refused. On
SIGTERM or SIGINT the health status turns NOT_SERVING, the service's
``stop`` hook runs (workers stop fetching and finish or nak what they hold),
the server stops with ``grace`` seconds for RPCs in flight, and then the
service's ``close`` hook releases its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from planzoom import tracing
from planzoom.auth import TokenVerifier
from planzoom.boundary import RpcBoundary
from planzoom.config import Settings, get_settings
from planzoom.logs import setup_logging
from planzoom.metrics import serve_metrics

log = logging.getLogger(__name__)

#: 64 MiB: large enough for any planzoom message a server sends (Job
#: records of big sets).
MAX_SEND_BYTES = 64 * 1024 * 1024


class Service:
    """What a service plugs into :func:`serve`.

    ``start()`` connects and starts background work; ``register(server)``
    then adds its servicers (with what ``start`` set up) and returns the
    role each of their methods needs (full method name → role, see
    :func:`planzoom.boundary.method_roles`); at shutdown ``stop(grace)``
    brings the background work down, the server then drains the RPCs in
    flight, and ``close()`` releases the connections and worker processes
    those RPCs used. ``unhealthy`` is set by :func:`serve`: call it when the service
    can no longer do its work, so that its health turns NOT_SERVING and
    Kubernetes restarts it.
    """

    name: str

    def register(self, server: grpc.aio.Server) -> dict[str, str]:
        return {}

    def unhealthy(self, reason: str) -> None:
        log.error("%s is unhealthy: %s", self.name, reason)

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None

    async def close(self) -> None:
        return None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' certificate and key, or None."""
    if not (settings.tls_cert_file and settings.tls_key_file):
        return None
    with open(settings.tls_key_file, "rb") as k, open(settings.tls_cert_file, "rb") as c:
        return grpc.ssl_server_credentials([(k.read(), c.read())])


async def serve(service: Service, settings: Settings, addr: str) -> None:
    """Run ``service`` on ``addr`` (host:port) until SIGTERM/SIGINT, with
    Prometheus metrics on ``PLANZOOM_METRICS_PORT`` (0 = off)."""
    boundary = RpcBoundary(TokenVerifier(settings), rate_per_second=settings.grpc_rate_per_second)
    server = grpc.aio.server(
        interceptors=[*tracing.server_interceptors(), boundary],
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    loop = asyncio.get_running_loop()
    names: list[str] = []

    def unhealthy(reason: str) -> None:
        log.error("%s is unhealthy: %s", service.name, reason)
        for n in ["", *names]:
            loop.create_task(health_servicer.set(n, health_pb2.HealthCheckResponse.NOT_SERVING))

    service.unhealthy = unhealthy
    await service.start()
    roles = service.register(server)
    boundary.roles.update(roles)
    names = sorted({m.split("/")[1] for m in roles})
    if settings.grpc_reflection:
        boundary.roles[f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"] = "viewer"
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
    credentials = server_credentials(settings)
    if credentials is None:
        server.add_insecure_port(addr)
    else:
        server.add_secure_port(addr, credentials)
    probes = None
    if settings.health_addr:
        probes = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
        probes.add_insecure_port(settings.health_addr)
        await probes.start()
    serve_metrics(settings.metrics_port)
    await server.start()
    for n in ["", *names]:
        await health_servicer.set(n, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s%s%s", service.name, addr, " (TLS)" if credentials else "",
             f", health on {settings.health_addr}" if probes else "")

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    grace = settings.grpc_grace_seconds
    log.info("%s shutting down (grace %.0f s)", service.name, grace)
    await health_servicer.enter_graceful_shutdown()
    await service.stop(grace)
    await server.stop(grace)
    # Only now: the RPCs that were in flight used these connections.
    await service.close()
    if probes is not None:
        # Last: a probe sees NOT_SERVING for the whole drain, not a refusal.
        await probes.stop(0)
    log.info("%s stopped", service.name)


@contextlib.contextmanager
def service_process(name: str) -> Iterator[Settings]:
    """What every service process does around its work (the gRPC services
    through :func:`run`, the gateway too): settings from the environment,
    JSON logs, its scratch directory, traces if the OTEL_* variables ask
    (flushed at the end). Yields the settings."""
    settings = get_settings()
    setup_logging(name, settings.log_level)
    if settings.work_dir:
        # An emptyDir mounted at /tmp starts empty: the scratch directory
        # under it is this process's to make.
        os.makedirs(settings.work_dir, mode=0o700, exist_ok=True)
    tracing.setup(name)
    try:
        yield settings
    finally:
        tracing.shutdown()


def run(service_type: Callable[[Settings], Service]) -> None:
    """A service's entry point (``python -m services.<name>``): see
    :func:`service_process`, then :func:`serve` on the service's address
    (``PLANZOOM_<NAME>_ADDR``) until SIGTERM. ``service_type`` is the
    service's class (its ``name`` says which service it is)."""
    name = service_type.name
    with service_process(name) as settings:
        asyncio.run(serve(service_type(settings), settings, getattr(settings, f"{name}_addr")))
