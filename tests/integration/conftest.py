"""One embedded stack per session: a real NATS server with JetStream,
SeaweedFS's S3 API behind a fault-injecting proxy, and the services as
processes, talked to over real gRPC and HTTP sockets."""

from __future__ import annotations

import httpx
import pytest

from planzoom_cli.client import Client
from planzoom_devstack.faultproxy import FaultProxy
from planzoom_devstack.issuer import DevIssuer
from planzoom_devstack.stack import EmbeddedStack, Ports
from tests.helpers import s3_client
from tests.otlp import OtlpReceiver

#: Limits and timings of the test stack: small enough to test without huge
#: inputs or long waits.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PAGES = 200
ACK_WAIT_SECONDS = 6
MAX_DELIVER = 3
STALL_SECONDS = 8
SWEEP_SECONDS = 2
UPLOAD_IDLE_SECONDS = 3
MAX_JOB_PIXELS = 50_000_000_000
TILE_PUT_TIMEOUT_SECONDS = 5
# S3's smallest part, so archives of a few pages already go out in parts.
ARCHIVE_PART_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="session")
def s3_proxy() -> FaultProxy:
    """Sits between the services and the S3 endpoint; passes everything
    until a test turns faults on."""
    ports = Ports.free()
    proxy = FaultProxy(f"http://127.0.0.1:{ports.s3}").start()
    proxy.stack_ports = ports
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def otlp() -> OtlpReceiver:
    """Where the stack's services export their traces (kept in memory)."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, s3_proxy, otlp) -> EmbeddedStack:
    s = EmbeddedStack(
        data_dir=tmp_path_factory.mktemp("stack"),
        ports=s3_proxy.stack_ports,
        issuer=DevIssuer(tmp_path_factory.mktemp("issuer")),
        extra_env={
            "PLANZOOM_S3_ENDPOINT_URL": s3_proxy.url,
            "PLANZOOM_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "PLANZOOM_MAX_PAGES": str(MAX_PAGES),
            "PLANZOOM_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
            "PLANZOOM_MAX_DELIVER": str(MAX_DELIVER),
            "PLANZOOM_STALL_SECONDS": str(STALL_SECONDS),
            "PLANZOOM_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "PLANZOOM_UPLOAD_IDLE_SECONDS": str(UPLOAD_IDLE_SECONDS),
            "PLANZOOM_MAX_JOB_PIXELS": str(MAX_JOB_PIXELS),
            "PLANZOOM_TILE_PUT_TIMEOUT_SECONDS": str(TILE_PUT_TIMEOUT_SECONDS),
            "PLANZOOM_ARCHIVE_PART_BYTES": str(ARCHIVE_PART_BYTES),
            "PLANZOOM_LOG_LEVEL": "INFO",
            # Traces on, as an operator turns them on, exported every 0.2 s.
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(stack):
    """An HTTP client of the stack's gateway (no credentials of its own)."""
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as c:
        yield c


def client_for(stack, org: str = "acme", role: str = "admin", ttl: float = 3600) -> Client:
    """A client of ``stack`` acting for ``org`` with ``role``."""
    env = stack.env()
    return Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"],
                  token=stack.token(org, role, ttl))


@pytest.fixture(scope="session")
def client(stack) -> Client:
    """An admin of org ``acme``, the org most tests work in."""
    c = client_for(stack)
    yield c
    c.close()


@pytest.fixture(scope="session")
def s3(stack):
    return s3_client(stack)
