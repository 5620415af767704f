"""What a kubelet and a Deployment controller would do with the chart's
rendered manifests, done with Docker, so that ``make chart-e2e`` runs the
pods the chart describes without a cluster.

Only these fields are translated, each as Kubernetes defines it; anything
else in a pod spec that changes how a container runs is refused
(:class:`Unsupported`), so the chart cannot grow a field this runner would
silently drop:

- ``containers[].image``, ``command``, ``args``, ``ports`` (published on
  127.0.0.1 so that the test can reach them), ``env`` (``value``,
  ``valueFrom.configMapKeyRef``, ``valueFrom.secretKeyRef``,
  ``valueFrom.fieldRef`` for ``metadata.name`` and ``metadata.namespace``),
  ``envFrom`` (``configMapRef``, ``secretRef``), ``volumeMounts``
  (``readOnly``), ``resources.limits`` (memory, cpu);
- ``securityContext`` (pod and container): ``runAsUser``, ``runAsGroup``,
  ``runAsNonRoot`` (checked), ``fsGroup`` (a supplementary group owning
  the volumes), ``readOnlyRootFilesystem``, ``capabilities``,
  ``allowPrivilegeEscalation: false`` (no-new-privileges), ``privileged``,
  ``seccompProfile: RuntimeDefault`` (Docker's default profile);
- ``volumes``: ``emptyDir`` (a fresh directory per pod; ``medium: Memory``
  a tmpfs) and ``secret`` / ``configMap`` (their keys as files, ``items``
  honoured, mode 0644), mounted as the pod spec says;
- ``readinessProbe`` and ``livenessProbe``: ``grpc``, ``httpGet``,
  ``tcpSocket`` with ``initialDelaySeconds``, ``periodSeconds``,
  ``timeoutSeconds``, ``failureThreshold``; a live pod that fails its
  liveness probe is restarted;
- ``terminationGracePeriodSeconds``: SIGTERM, then SIGKILL after it;
- Deployments: ``replicas`` pods, a rolling update with maxSurge 1 and
  maxUnavailable 0 (the defaults at these replica counts); Jobs with the
  ``helm.sh/hook: pre-install`` annotation run to completion first, retried
  up to ``backoffLimit``;
- Services: a :class:`ServiceProxy` on 127.0.0.1 that, like kube-proxy,
  sends each new connection to a ready pod the selector matches; inside the
  pod network a Service's name (and its ``.<namespace>.svc`` forms) is a
  Docker network alias of every matching pod.

What it does not do: scheduling, resource requests, HPAs, KEDA, PDBs and
NetworkPolicies (those are checked on the rendered objects by
tests/unit/test_chart.py). Docker's DNS does not drop an unready pod from a
Service's name, so only the 127.0.0.1 proxies gate on readiness.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import secrets
import select
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import docker
import grpc
from docker.types import Mount
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

POD_FIELDS = {"containers", "volumes", "securityContext", "terminationGracePeriodSeconds",
              "serviceAccountName", "automountServiceAccountToken", "restartPolicy",
              "imagePullSecrets"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "ports", "env",
                    "envFrom", "volumeMounts", "resources", "securityContext", "readinessProbe",
                    "livenessProbe"}
PROBE_FIELDS = {"grpc", "httpGet", "tcpSocket", "initialDelaySeconds", "periodSeconds",
                "timeoutSeconds", "failureThreshold", "successThreshold"}


class Unsupported(Exception):
    """The manifest uses a field this runner cannot carry out faithfully."""


def _only(obj: dict, allowed: set[str], where: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise Unsupported(f"{where}: {sorted(extra)} not translated by tests/e2e/kubelet.py")


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2Gi``, ``1G``) in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if not m:
        raise Unsupported(f"memory quantity {quantity!r}")
    units = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(m.group(1)) * units[m.group(2)]


def cpu_nanos(quantity: str) -> int:
    q = str(quantity)
    return int(q[:-1]) * 10**6 if q.endswith("m") else int(float(q) * 10**9)


@dataclass
class Pod:
    """One running pod: its Docker container and what its probes saw."""

    name: str
    owner: str
    labels: dict[str, str]
    spec: dict
    container: object = None
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> 127.0.0.1 port
    ready: bool = False
    terminating: bool = False
    restarts: int = 0
    #: (monotonic time, probe kind, outcome) for every probe answer after SIGTERM
    drain_probes: list[tuple[float, str, str]] = field(default_factory=list)
    #: statuses a grpc.health.v1 Watch saw while the pod stopped
    drain_watch: list[str] = field(default_factory=list)
    stop_seconds: float | None = None
    exit_code: int | None = None

    @property
    def main(self) -> dict:
        return self.spec["containers"][0]

    def port(self, name_or_number) -> int:
        """The 127.0.0.1 port of a container port given by name or number."""
        number = name_or_number
        if isinstance(name_or_number, str):
            (number,) = [p["containerPort"] for p in self.main.get("ports", [])
                         if p.get("name") == name_or_number]
        return self.ports[int(number)]

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


class Kubelet:
    """Runs rendered manifests' pods on a Docker network of their own.

    ``objects`` are the API objects the cluster already holds (the Secrets
    an operator creates); :meth:`apply` takes the chart's rendered ones.
    """

    def __init__(self, namespace: str, objects: list[dict], network: str | None = None):
        self.namespace = namespace
        self.client = docker.from_env()
        self.network = self.client.networks.create(
            network or f"planzoom-e2e-{secrets.token_hex(3)}", driver="bridge")
        self.root = Path(tempfile.mkdtemp(prefix="planzoom-kubelet-"))
        self.objects: dict[tuple[str, str], dict] = {}
        for o in objects:
            self._store(o)
        self.pods: dict[str, Pod] = {}
        self.stopped: list[Pod] = []
        self.deployments: dict[str, dict] = {}
        self.proxies: list[ServiceProxy] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- objects ---------------------------------------------------------
    def _store(self, o: dict) -> None:
        self.objects[(o["kind"], o["metadata"]["name"])] = o

    def _data(self, kind: str, name: str) -> dict[str, bytes]:
        o = self.objects.get((kind, name))
        if o is None:
            raise RuntimeError(f"{kind} {name!r} does not exist (CreateContainerConfigError)")
        data = {k: v.encode() for k, v in (o.get("data") or {}).items()} if kind == "ConfigMap" \
            else {k: base64.b64decode(v) for k, v in (o.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (o.get("stringData") or {}).items()})
        return data

    def apply(self, docs: list[dict], timeout: float = 180) -> None:
        """Install: pre-install hook Jobs to completion, then every
        Deployment's pods, until all are ready."""
        for d in docs:
            if d["kind"] in ("ConfigMap", "Secret", "Service", "Deployment", "Job"):
                self._store(d)
        for d in docs:
            hooks = d["metadata"].get("annotations", {}).get("helm.sh/hook", "")
            if d["kind"] == "Job" and "pre-install" in hooks.split(","):
                self.run_job(d)
        for d in docs:
            if d["kind"] == "Deployment":
                self.deployments[d["metadata"]["name"]] = d
                for _ in range(d["spec"].get("replicas", 1)):
                    self.start_pod(d)
        self.wait_ready(timeout=timeout)

    def service_selector(self, service: str) -> dict[str, str]:
        return self.objects[("Service", service)]["spec"]["selector"]

    def aliases(self, labels: dict[str, str]) -> list[str]:
        """The Service names (short and namespaced) whose selector matches."""
        names = []
        for (kind, name), o in self.objects.items():
            sel = o.get("spec", {}).get("selector") if kind == "Service" else None
            if sel and all(labels.get(k) == v for k, v in sel.items()):
                names += [name, f"{name}.{self.namespace}", f"{name}.{self.namespace}.svc",
                          f"{name}.{self.namespace}.svc.cluster.local"]
        return names

    # -- pods -------------------------------------------------------------
    def _env(self, pod_name: str, c: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom", []):
            _only(src, {"configMapRef", "secretRef", "prefix"}, "envFrom")
            kind, ref = ("ConfigMap", src["configMapRef"]) if "configMapRef" in src \
                else ("Secret", src["secretRef"])
            for k, v in self._data(kind, ref["name"]).items():
                env[src.get("prefix", "") + k] = v.decode()
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            vf = e["valueFrom"]
            if "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind, ref = ("ConfigMap", vf["configMapKeyRef"]) if "configMapKeyRef" in vf \
                    else ("Secret", vf["secretKeyRef"])
                data = self._data(kind, ref["name"])
                if ref["key"] not in data:
                    raise RuntimeError(f"{kind} {ref['name']!r} has no key {ref['key']!r}")
                env[e["name"]] = data[ref["key"]].decode()
            elif "fieldRef" in vf:
                path = vf["fieldRef"]["fieldPath"]
                values = {"metadata.name": pod_name, "metadata.namespace": self.namespace}
                if path not in values:
                    raise Unsupported(f"fieldRef {path}")
                env[e["name"]] = values[path]
            else:
                raise Unsupported(f"env valueFrom {sorted(vf)}")
        return env

    def _volumes(self, pod_dir: Path, spec: dict, c: dict, gid: int | None
                 ) -> tuple[list[Mount], dict[str, str]]:
        sources: dict[str, tuple[str, str]] = {}  # volume -> ("bind", path) | ("tmpfs", opts)
        for v in spec.get("volumes", []):
            _only(v, {"name", "emptyDir", "secret", "configMap"}, f"volume {v['name']}")
            path = pod_dir / "volumes" / v["name"]
            path.mkdir(parents=True)
            if "emptyDir" in v:
                ed = v["emptyDir"] or {}
                if ed.get("medium") == "Memory":
                    size = memory_bytes(ed["sizeLimit"]) if "sizeLimit" in ed else None
                    sources[v["name"]] = ("tmpfs", "mode=1777" + (f",size={size}" if size else ""))
                    continue
                os.chmod(path, 0o777)  # an emptyDir is world-writable, group fsGroup
            else:
                kind, ref = ("Secret", v["secret"]) if "secret" in v else ("ConfigMap",
                                                                           v["configMap"])
                data = self._data(kind, ref.get("secretName") or ref.get("name"))
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise RuntimeError(f"{kind} has no key {item['key']!r}")
                    f = path / item["path"]
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_bytes(data[item["key"]])
                    os.chmod(f, ref.get("defaultMode", 0o644))
                    if gid is not None:
                        os.chown(f, 0, gid)
                os.chmod(path, 0o755)
            if gid is not None:
                os.chown(path, 0, gid)
                os.chmod(path, os.stat(path).st_mode | 0o2000)
            sources[v["name"]] = ("bind", str(path))
        mounts, tmpfs = [], {}
        for m in c.get("volumeMounts", []):
            _only(m, {"name", "mountPath", "readOnly"}, "volumeMount")
            kind, src = sources[m["name"]]
            if kind == "tmpfs":
                tmpfs[m["mountPath"]] = src
            else:
                mounts.append(Mount(m["mountPath"], src, type="bind",
                                    read_only=bool(m.get("readOnly"))))
        return mounts, tmpfs

    def start_pod(self, owner: dict, name: str | None = None) -> Pod:
        """Create one pod of ``owner`` (a Deployment or Job) and start it."""
        template = owner["spec"]["template"]
        spec, labels = template["spec"], dict(template["metadata"].get("labels", {}))
        _only(spec, POD_FIELDS, "pod spec")
        if len(spec["containers"]) != 1:
            raise Unsupported("pods with more than one container")
        c = spec["containers"][0]
        _only(c, CONTAINER_FIELDS, f"container {c['name']}")
        name = name or f"{owner['metadata']['name']}-{secrets.token_hex(3)}"
        psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
        sc = {**psc, **csc}
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
        if sc.get("runAsNonRoot") and not uid:
            raise RuntimeError(f"{name}: runAsNonRoot needs a non-zero runAsUser")
        seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp != "RuntimeDefault":
            raise Unsupported(f"seccompProfile {seccomp}")
        fs_group = psc.get("fsGroup")
        pod_dir = self.root / name
        mounts, tmpfs = self._volumes(pod_dir, spec, c, fs_group)
        kwargs = dict(
            image=c["image"], name=f"{self.network.name}-{name}", hostname=name[:63],
            detach=True, environment=self._env(name, c), mounts=mounts, tmpfs=tmpfs,
            labels={"planzoom-e2e": self.network.name, **labels},
            ports={f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}": ("127.0.0.1", None)
                   for p in c.get("ports", [])},
            read_only=bool(sc.get("readOnlyRootFilesystem")),
            privileged=bool(sc.get("privileged")),
            cap_drop=sc.get("capabilities", {}).get("drop"),
            cap_add=sc.get("capabilities", {}).get("add"),
            security_opt=(["no-new-privileges"] if sc.get("allowPrivilegeEscalation") is False
                          else None),
        )
        if uid is not None:
            kwargs["user"] = f"{uid}:{gid}" if gid is not None else str(uid)
        if fs_group is not None:
            kwargs["group_add"] = [str(fs_group)]
        if c.get("command"):
            kwargs["entrypoint"] = c["command"]
        if c.get("args"):
            kwargs["command"] = c["args"]
        limits = c.get("resources", {}).get("limits", {})
        if "memory" in limits:
            kwargs["mem_limit"] = memory_bytes(limits["memory"])
        if "cpu" in limits:
            kwargs["nano_cpus"] = cpu_nanos(limits["cpu"])
        container = self.client.containers.create(**kwargs)
        self.network.connect(container, aliases=self.aliases(labels))
        # Created on the default bridge too; a pod has one network.
        self.client.networks.get("bridge").disconnect(container)
        container.start()
        container.reload()
        pod = Pod(name, owner["metadata"]["name"], labels, spec, container)
        for key, binding in container.attrs["NetworkSettings"]["Ports"].items():
            if binding:
                pod.ports[int(key.split("/")[0])] = int(binding[0]["HostPort"])
        with self._lock:
            self.pods[name] = pod
        if owner["kind"] == "Deployment":
            threading.Thread(target=self._probe_loop, args=(pod,), daemon=True,
                             name=f"probe-{name}").start()
        return pod

    def run_job(self, job: dict, timeout: float = 120) -> None:
        """Run a Job's pod until it succeeds, restarting it up to backoffLimit."""
        attempts = job["spec"].get("backoffLimit", 6) + 1
        for attempt in range(attempts):
            pod = self.start_pod(job)
            result = pod.container.wait(timeout=timeout)
            pod.exit_code = result["StatusCode"]
            self.pods.pop(pod.name)
            self.stopped.append(pod)
            if pod.exit_code == 0:
                return
            log.warning("job %s attempt %d exited %d:\n%s", job["metadata"]["name"], attempt + 1,
                        pod.exit_code, pod.logs()[-2000:])
            time.sleep(min(10, 0.5 * 2**attempt))
        raise RuntimeError(f"job {job['metadata']['name']} failed {attempts} times:\n"
                           f"{pod.logs()[-3000:]}")

    # -- probes -----------------------------------------------------------
    def probe(self, pod: Pod, probe: dict) -> tuple[bool, str]:
        """One probe as the kubelet runs it: (success, what it saw)."""
        _only(probe, PROBE_FIELDS, "probe")
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "grpc" in probe:
                g = probe["grpc"]
                with grpc.insecure_channel(f"127.0.0.1:{pod.port(g['port'])}") as ch:
                    resp = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=g.get("service", "")),
                        timeout=timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
                return resp.status == health_pb2.HealthCheckResponse.SERVING, status
            if "httpGet" in probe:
                h = probe["httpGet"]
                url = f"http://127.0.0.1:{pod.port(h['port'])}{h.get('path', '/')}"
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with opener.open(url, timeout=timeout) as resp:
                        return 200 <= resp.status < 400, f"HTTP {resp.status}"
                except urllib.error.HTTPError as e:
                    return 200 <= e.code < 400, f"HTTP {e.code}"
            if "tcpSocket" in probe:
                with socket.create_connection(("127.0.0.1", pod.port(probe["tcpSocket"]["port"])),
                                              timeout=timeout):
                    return True, "open"
            raise Unsupported(f"probe {sorted(probe)}")
        except (grpc.RpcError, OSError, KeyError) as e:
            detail = e.code().name if isinstance(e, grpc.RpcError) else type(e).__name__
            return False, detail

    def _probe_loop(self, pod: Pod) -> None:
        c = pod.main
        readiness, liveness = c.get("readinessProbe"), c.get("livenessProbe")
        started = time.monotonic()
        next_ready = next_live = started
        ready_fail = live_fail = 0
        while not self._stop.is_set() and pod.exit_code is None:
            now = time.monotonic()
            if pod.terminating:
                # Draining: the kubelet keeps probing readiness; look often
                # enough to see a short drain.
                ok, seen = self.probe(pod, readiness) if readiness else (False, "none")
                pod.drain_probes.append((now, "readiness", seen))
                pod.ready = False
                time.sleep(0.02)
                continue
            if readiness and now >= next_ready and now - started >= readiness.get(
                    "initialDelaySeconds", 0):
                ok, _ = self.probe(pod, readiness)
                ready_fail = 0 if ok else ready_fail + 1
                if ok:
                    pod.ready = True
                elif ready_fail >= readiness.get("failureThreshold", 3) or not pod.ready:
                    pod.ready = False
                # Until first ready, look every 0.2 s (the kubelet's start-up
                # probing is as fast as periodSeconds; this only saves time).
                next_ready = now + (readiness.get("periodSeconds", 10) if pod.ready else 0.2)
            if liveness and now >= next_live and now - started >= liveness.get(
                    "initialDelaySeconds", 0):
                ok, seen = self.probe(pod, liveness)
                live_fail = 0 if ok else live_fail + 1
                next_live = now + liveness.get("periodSeconds", 10)
                if live_fail >= liveness.get("failureThreshold", 3):
                    log.warning("%s failed its liveness probe (%s): restarting", pod.name, seen)
                    pod.container.restart(timeout=self.grace(pod))
                    pod.restarts += 1
                    live_fail, pod.ready, started = 0, False, time.monotonic()
            time.sleep(0.05)

    def grace(self, pod: Pod) -> int:
        return int(pod.spec.get("terminationGracePeriodSeconds", 30))

    def wait_ready(self, pods: list[Pod] | None = None, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [p for p in (pods or list(self.pods.values())) if not p.ready]
            if not waiting:
                return
            for p in waiting:
                p.container.reload()
                if p.container.status == "exited":
                    raise RuntimeError(f"pod {p.name} exited:\n{p.logs()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError("pods not ready in time: " + ", ".join(
            f"{p.name}:\n{p.logs()[-1500:]}" for p in (pods or self.pods.values()) if not p.ready))

    def _watch_health(self, pod: Pod, port: int, started: threading.Event) -> None:
        """Follow grpc.health.v1 Watch on the pod's probe port while it stops."""
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
                for resp in stream:
                    pod.drain_watch.append(
                        health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
                    started.set()
        except grpc.RpcError as e:
            pod.drain_watch.append(e.code().name)
        finally:
            started.set()

    def terminate(self, pod: Pod) -> None:
        """Delete the pod as the kubelet does: out of the Services, SIGTERM,
        SIGKILL after terminationGracePeriodSeconds."""
        probe = pod.main.get("readinessProbe", {})
        watcher = None
        if "grpc" in probe:
            started = threading.Event()
            watcher = threading.Thread(target=self._watch_health, daemon=True,
                                       args=(pod, pod.port(probe["grpc"]["port"]), started))
            watcher.start()
            started.wait(5)
        pod.terminating, pod.ready = True, False
        t0 = time.monotonic()
        pod.container.kill(signal="SIGTERM")
        try:
            result = pod.container.wait(timeout=self.grace(pod))
        except Exception:  # past the grace period
            pod.container.kill(signal="SIGKILL")
            result = pod.container.wait(timeout=30)
        pod.stop_seconds = time.monotonic() - t0
        pod.exit_code = result["StatusCode"]
        if watcher is not None:
            watcher.join(5)
        with self._lock:
            self.pods.pop(pod.name, None)
            self.stopped.append(pod)

    def pods_of(self, owner: str) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.owner == owner]

    def rolling_restart(self, deployment: str) -> list[tuple[Pod, Pod]]:
        """``kubectl rollout restart``: for each old pod, a new one (maxSurge
        1), and only when it is ready is the old one terminated
        (maxUnavailable 0). Returns (old, new) pairs."""
        d = self.deployments[deployment]
        pairs = []
        for old in self.pods_of(deployment):
            new = self.start_pod(d)
            self.wait_ready([new])
            self.terminate(old)
            pairs.append((old, new))
        return pairs

    def proxy(self, service: str, port_name: str) -> ServiceProxy:
        """A 127.0.0.1 port that reaches the Service's ready pods."""
        p = ServiceProxy(self, self.service_selector(service), port_name)
        self.proxies.append(p)
        return p

    def delete(self) -> None:
        self._stop.set()
        for p in self.proxies:
            p.close()
        mine = {"label": f"planzoom-e2e={self.network.name}"}
        for c in self.client.containers.list(all=True, filters=mine):
            c.remove(force=True)
        self.network.remove()
        shutil.rmtree(self.root, ignore_errors=True)


class ServiceProxy:
    """kube-proxy for one Service port, on 127.0.0.1: each connection goes to
    the next ready, not terminating pod the selector matches."""

    def __init__(self, kubelet: Kubelet, selector: dict[str, str], port_name: str):
        self.kubelet, self.selector, self.port_name = kubelet, selector, port_name
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._turn = itertools.count()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def endpoints(self) -> list[Pod]:
        with self.kubelet._lock:
            pods = list(self.kubelet.pods.values())
        return [p for p in pods if p.ready and not p.terminating
                and all(p.labels.get(k) == v for k, v in self.selector.items())]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            pods = self.endpoints()
            if not pods:
                client.close()  # no endpoints: refused, as a Service without ready pods
                continue
            pod = pods[next(self._turn) % len(pods)]
            try:
                upstream = socket.create_connection(("127.0.0.1", pod.port(self.port_name)), 2)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 60)
                if not readable:
                    continue
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def close(self) -> None:
        self._closed = True
        self.sock.close()
