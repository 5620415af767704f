"""The planzoom stack as containers, started with testcontainers from the
images ``make images`` builds: NATS, SeaweedFS (S3) and the services,
all with host networking so traffic stays on 127.0.0.1. Each service runs
with a read-only root filesystem and a tmpfs at /tmp, as in Kubernetes.

Ryuk (testcontainers' reaper) is disabled, since its image cannot be
pulled here; containers are removed by ``stop()`` at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer  # noqa: E402

from planzoom_devstack.issuer import DevIssuer  # noqa: E402
from planzoom_devstack.stack import (  # noqa: E402
    SEAWEED_PARTS,
    SERVICES,
    Ports,
    free_port,
    grpc_serving,
    loopback_env,
    port_open,
    s3_ready,
    seaweedfs_argv,
)

VERSION = "latest"


def docker_ready() -> str | None:
    """None if a Docker engine answers and the images exist, else why not."""
    if not shutil.which("docker"):
        return "no docker client"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine running"
    for image in ("planzoom-nats", "planzoom-seaweedfs", *(f"planzoom-{s}" for s in SERVICES)):
        if subprocess.run(["docker", "image", "inspect", f"{image}:{VERSION}"],
                          capture_output=True).returncode != 0:
            return f"image {image}:{VERSION} missing (run make images)"
    return None


class ContainerStack:
    """The same surface as :class:`planzoom_devstack.stack.EmbeddedStack` that the
    tests use: env(), s3_endpoint, bucket, start_service, kill, stop."""

    bucket = "planzoom"

    #: Where the containers find the issuer's public key (mounted read-only).
    ISSUER_KEY = "/etc/planzoom/issuer.pub.pem"

    def __init__(self, extra_env: dict[str, str] | None = None):
        self.ports = Ports.free()
        self.extra_env = extra_env or {}
        self.containers: dict[str, DockerContainer] = {}
        self.issuer = DevIssuer(Path(tempfile.mkdtemp(prefix="planzoom-issuer-")))

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def env(self) -> dict[str, str]:
        return {**loopback_env(self.ports, self.bucket), **self.issuer.env(),
                "PLANZOOM_AUTH_PUBLIC_KEY_FILE": self.ISSUER_KEY, "PLANZOOM_METRICS_PORT": "0",
                **self.extra_env}

    def _run(self, name: str, image: str, command: str | None = None,
             locked_down: bool = False, data: bool = False) -> DockerContainer:
        c = DockerContainer(f"{image}:{VERSION}").with_kwargs(network_mode="host")
        if command:
            c = c.with_command(command)
        if data:  # a store's files, gone with the container
            c = c.with_tmpfs_mount("/data", "size=4g").with_tmpfs_mount("/tmp", "size=256m")
        if locked_down:
            self.issuer.public_key_file.chmod(0o644)
            c = c.with_volume_mapping(str(self.issuer.public_key_file), self.ISSUER_KEY, "ro")
            c = c.with_tmpfs_mount("/tmp", "size=2g").with_kwargs(
                network_mode="host", read_only=True, cap_drop=["ALL"],
                security_opt=["no-new-privileges"])
        for k, v in self.env().items():
            c = c.with_env(k, v)
        c.start()
        self.containers[name] = c
        return c

    def _wait(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            c = self.containers[name].get_wrapped_container()
            c.reload()
            if c.status == "exited":
                raise RuntimeError(f"{name} exited: {c.logs(tail=30).decode(errors='replace')}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout} s")

    def start_service(self, name: str, timeout: float = 60) -> None:
        self._run(name, f"planzoom-{name}", locked_down=True)
        port = getattr(self.ports, name)
        self._wait(name, lambda: grpc_serving(f"127.0.0.1:{port}"), timeout)

    def start(self) -> ContainerStack:
        p = self.ports
        try:
            self._run("nats", "planzoom-nats",
                      f"-js -sd /data -a 127.0.0.1 -p {p.nats} -m {p.nats_monitor}")
            self._wait("nats", lambda: port_open(p.nats), 30)
            ports = {name: free_port() for part in ("s3", *SEAWEED_PARTS)
                     for name in (part, f"{part}.grpc")}
            argv = seaweedfs_argv("/weed", Path("/data"), p.s3, ports)
            self._run("s3", "planzoom-seaweedfs", " ".join(argv[1:]), data=True)
            self._wait("s3", lambda: s3_ready(self.s3_endpoint), 90)
            for name in SERVICES:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self, name: str) -> str:
        out, err = self.containers[name].get_logs()
        return (out + err).decode(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL the container, as a crashed node would."""
        c = self.containers.pop(name)
        c.get_wrapped_container().kill()
        c.get_wrapped_container().remove(force=True)

    def stop(self) -> None:
        for name in [*(n for n in self.containers if n not in ("nats", "s3")), "s3", "nats"]:
            c = self.containers.pop(name, None)
            if c is not None:
                try:
                    c.stop()
                except Exception:  # already gone
                    pass
