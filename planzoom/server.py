"""The gRPC server every service runs, and the process lifecycle around it.

Each server registers the standard health service (``grpc.health.v1``) and
reflection, so Kubernetes gRPC probes and ``grpcurl`` work, and runs every
RPC through :class:`planzoom.boundary.RpcBoundary`. On SIGTERM or
SIGINT the health status turns NOT_SERVING, the service's ``stop`` hook runs
(workers stop fetching and finish or nak what they hold), and the server
stops with ``grace`` seconds for RPCs in flight.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from planzoom.boundary import RpcBoundary
from planzoom.config import Settings, get_settings
from planzoom.logs import setup_logging
from planzoom.metrics import serve_metrics

log = logging.getLogger(__name__)

#: 64 MiB: large enough for any planzoom message (Job records of big sets).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class Service:
    """What a service plugs into :func:`serve`.

    ``start()`` connects and starts background work; ``register(server)``
    then adds its servicers (with what ``start`` set up) and returns their
    full service names; ``stop(grace)`` brings the work down.
    """

    name: str

    def register(self, server: grpc.aio.Server) -> Iterable[str]:
        return ()

    async def start(self) -> None:
        return None

    async def stop(self, grace: float) -> None:
        return None


async def serve(service: Service, addr: str, grace: float, metrics_port: int = 0) -> None:
    """Run ``service`` on ``addr`` (host:port) until SIGTERM/SIGINT, with
    Prometheus metrics on ``metrics_port`` (0 = off)."""
    server = grpc.aio.server(
        interceptors=[RpcBoundary()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await service.start()
    names = list(service.register(server))
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    server.add_insecure_port(addr)
    serve_metrics(metrics_port)
    await server.start()
    for n in ["", *names]:
        await health_servicer.set(n, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s", service.name, addr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("%s shutting down (grace %.0f s)", service.name, grace)
    await health_servicer.enter_graceful_shutdown()
    await service.stop(grace)
    await server.stop(grace)
    log.info("%s stopped", service.name)


def run(service_type: Callable[[Settings], Service]) -> None:
    """A service's entry point (``python -m services.<name>``): settings from
    the environment, JSON logs, then :func:`serve` on the service's address
    (``PLANZOOM_<NAME>_ADDR``) until SIGTERM. ``service_type`` is the
    service's class (its ``name`` says which service it is)."""
    settings = get_settings()
    name = service_type.name
    setup_logging(name, settings.log_level)
    asyncio.run(serve(service_type(settings), getattr(settings, f"{name}_addr"),
                      settings.grpc_grace_seconds, settings.metrics_port))
