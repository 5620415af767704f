"""``make chart-e2e``: the Helm chart's rendered manifests, run as a kubelet
would (tests/e2e/kubelet.py) on a Docker network of their own, against NATS
with the chart's documented users and the S3 endpoint image.

What an operator must set is set the way the chart README says: an issuer's
public key in a Secret, TLS from a (throwaway) CA in a kubernetes.io/tls
Secret, per-service NATS users in a Secret, S3 credentials in a Secret. Two
tile and two progress pods share the work; every Deployment is restarted
rolling while jobs run.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import grpc
import helm_python as helm
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from planzoom.messaging import permissions
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_devstack.issuer import AUDIENCE, ISSUER, DevIssuer
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY, seaweedfs_argv
from tests.dzi_check import check_page
from tests.e2e.kubelet import Kubelet
from tests.helpers import wait_ended
from tests.unit.test_chart import CHART, render

pytestmark = [pytest.mark.integration, pytest.mark.containers]

NAMESPACE = "plans"
RELEASE = "pz"
PDF = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
COMPONENTS = ("ingest", "progress", "render", "tile", "transcode", "gateway")


def throwaway_ca(names: list[str]) -> dict[str, str]:
    """A CA and one server certificate for ``names`` (DNS SANs), as the
    data of a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "planzoom e2e CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {"tls.crt": cert.public_bytes(pem).decode(), "ca.crt": ca.public_bytes(pem).decode(),
            "tls.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}


def documented_nats_config() -> str:
    """The users block the chart ships for the NATS server
    (files/nats-users.conf, which deploy/k8s/nats/values.yaml includes)."""
    return (CHART / "files" / "nats-users.conf").read_text()


def secret(name: str, data: dict[str, str], type_: str = "Opaque") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name}, "stringData": data}


def infrastructure(nats_passwords: dict[str, str]) -> list[dict]:
    """NATS (JetStream, the documented users) and the S3 endpoint image, as
    the manifests a cluster would hold for them."""
    def pod(name, image, args, port, env_secret=None, config=None):
        labels = {"app": name}
        spec = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                    "runAsGroup": 10001, "fsGroup": 10001},
                "containers": [{
                    "name": name, "image": image, "args": args,
                    "ports": [{"name": "main", "containerPort": port}],
                    "securityContext": {"readOnlyRootFilesystem": True,
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                     {"name": "tmp", "mountPath": "/tmp"}]
                    + ([{"name": "config", "mountPath": "/etc/nats", "readOnly": True}]
                       if config else []),
                    **({"envFrom": [{"secretRef": {"name": env_secret}}]} if env_secret else {}),
                }],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
                + ([{"name": "config", "configMap": {"name": config}}] if config else [])}
        return [
            {"kind": "Deployment", "metadata": {"name": name},
             "spec": {"replicas": 1, "template": {"metadata": {"labels": labels}, "spec": spec}}},
            {"kind": "Service", "metadata": {"name": name},
             "spec": {"selector": labels, "ports": [{"port": port}]}},
        ]

    # As deploy/k8s/nats/values.yaml has the NATS chart write it.
    conf = "jetstream {store_dir: /data}\ninclude planzoom-users.conf;\n"
    return [
        {"kind": "ConfigMap", "metadata": {"name": "nats-config"},
         "data": {"nats.conf": conf, "planzoom-users.conf": documented_nats_config()}},
        secret("nats-passwords", {permissions.password_variable(u): p
                                  for u, p in nats_passwords.items()}),
        *pod("nats", "planzoom-nats:latest", ["-c", "/etc/nats/nats.conf", "-p", "4222"], 4222,
             env_secret="nats-passwords", config="nats-config"),
        # SeaweedFS as the in-cluster store (its own chart in a real cluster;
        # deploy/k8s/planzoom/README.md), with the operator's S3 keys.
        *pod("s3", "planzoom-seaweedfs:latest",
             seaweedfs_argv("/weed", Path("/data"), 9000, bind="0.0.0.0")[1:], 9000,
             env_secret="planzoom-s3"),
    ]


@pytest.fixture(scope="module")
def cluster(images, tmp_path_factory):
    issuer = DevIssuer(tmp_path_factory.mktemp("issuer"))
    users = ["setup", *COMPONENTS]
    nats_passwords = {permissions.user_name(u) if u != "setup" else permissions.SETUP_USER:
                      "pz" + secrets.token_hex(16) for u in users}
    services = [f"{RELEASE}-planzoom-{c}" for c in ("ingest", "progress", "gateway")]
    tls = throwaway_ca([n for s in services for n in (
        s, f"{s}.{NAMESPACE}", f"{s}.{NAMESPACE}.svc", f"{s}.{NAMESPACE}.svc.cluster.local")])
    operator_secrets = [
        secret("planzoom-issuer", {"public-key.pem": issuer.public_key_file.read_text()}),
        secret("planzoom-tls", tls, "kubernetes.io/tls"),
        secret("planzoom-nats-users", {
            u: nats_passwords[permissions.SETUP_USER if u == "setup" else permissions.user_name(u)]
            for u in users}),
        secret("planzoom-s3", {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                               "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}),
        # The chart's default: a Secret per component (here all with the one
        # identity this SeaweedFS knows; docs/s3-policies.md for real ones).
        *(secret(f"planzoom-s3-{c}", {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                                      "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY})
          for c in COMPONENTS),
        secret("planzoom-gateway", {"signing-key": secrets.token_hex(32)}),
        secret("planzoom-work-grants", {"key": secrets.token_hex(32)}),
    ]
    # The defaults, plus what an operator must set for this cluster, plus
    # two tile pods (the default autoscaler floor is one) and short ack
    # waits so that a lost page comes back within the test.
    values = {
        # one NATS server here: its streams cannot keep three replicas
        "nats": {"url": "nats://nats:4222", "usersSecret": "planzoom-nats-users", "replicas": 1},
        "s3": {"endpointUrl": "http://s3:9000", "createBucket": True},
        "networkPolicy": {"s3": {"ports": [9000], "to": [{"podSelector": {"matchLabels": {
            "app": "s3"}}}]}},
        "tls": {"secretName": "planzoom-tls"},
        "auth": {"issuer": ISSUER, "audience": AUDIENCE},
        "ackWaitSeconds": 10,
        "components": {"tile": {"autoscaling": {"minReplicas": 2}}},
    }
    docs = render(values)
    infra = infrastructure(nats_passwords)
    kubelet = Kubelet(NAMESPACE, [*operator_secrets, *infra])
    try:
        for d in (d for d in infra if d["kind"] == "Deployment"):
            kubelet.deployments[d["metadata"]["name"]] = d
            kubelet.start_pod(d)
        kubelet.wait_ready(timeout=60)
        kubelet.apply(docs, timeout=180)
        kubelet.issuer, kubelet.docs, kubelet.values = issuer, docs, values
        kubelet.ca_file = tmp_path_factory.mktemp("ca") / "ca.crt"
        kubelet.ca_file.write_text(tls["ca.crt"])
        kubelet.ingest = kubelet.proxy(f"{RELEASE}-planzoom-ingest", "grpc")
        kubelet.progress = kubelet.proxy(f"{RELEASE}-planzoom-progress", "grpc")
        yield kubelet
    finally:
        kubelet.delete()


@pytest.fixture(scope="module")
def client(cluster):
    # As through a port-forward: the certificate names the Services.
    c = Client(cluster.ingest.addr, cluster.progress.addr,
               token=cluster.issuer.mint("acme", "admin"), ca_file=str(cluster.ca_file),
               server_name=f"{RELEASE}-planzoom-ingest")
    yield c
    c.close()


@pytest.fixture(scope="module")
def s3(cluster):
    (pod,) = cluster.pods_of("s3")
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{pod.port(9000)}",
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                        region_name="us-east-1")


def render_notes(values: dict) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)[
            "planzoom/templates/NOTES.txt"]


def folded_events(pod) -> float:
    """Progress events a progress pod has folded (its update-lag samples)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{pod.port('metrics')}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("planzoom_progress_update_lag_seconds_count"))


def test_pods_run_as_the_chart_says(cluster):
    """Every pod the chart renders runs: uid 10001, read-only root, no
    capabilities, its env from the ConfigMap and Secrets, its volumes."""
    deployments = {d["metadata"]["name"]: d for d in cluster.docs if d["kind"] == "Deployment"}
    assert sorted(deployments) == sorted(f"{RELEASE}-planzoom-{c}" for c in COMPONENTS)
    setup = [p for p in cluster.stopped if p.owner == f"{RELEASE}-planzoom-setup"]
    assert setup and setup[-1].exit_code == 0, "the NATS setup hook Job ran first"
    for name, d in deployments.items():
        pods = cluster.pods_of(name)
        assert len(pods) == d["spec"]["replicas"] and all(p.ready for p in pods)
        for pod in pods:
            pod.container.reload()
            host = pod.container.attrs["HostConfig"]
            assert pod.container.attrs["Config"]["User"] == "10001:10001"
            assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in host["SecurityOpt"]
            env = dict(e.split("=", 1) for e in pod.container.attrs["Config"]["Env"])
            assert env["PLANZOOM_NATS_USER"] == f"planzoom-{name.rsplit('-', 1)[1]}"
            assert env["PLANZOOM_WORK_DIR"] == "/tmp/planzoom"
            _, out = pod.container.exec_run(["python", "-c", "import os; print(os.getuid(), "
                                             "os.access('/', os.W_OK), os.path.isdir("
                                             "'/tmp/planzoom'))"])
            assert out.decode().split() == ["10001", "False", "True"], "uid, root, scratch dir"
    assert len(cluster.pods_of(f"{RELEASE}-planzoom-tile")) == 2
    assert len(cluster.pods_of(f"{RELEASE}-planzoom-progress")) == 2
    # TLS: a plaintext call to the ingest Service is refused; the probe port
    # stays plaintext.
    with grpc.insecure_channel(cluster.ingest.addr) as ch:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=3)


def test_corpus_pdf_through_the_ingest_pod(cluster, client, s3, corpus):
    plan = jobs_pb2.PlanRef(org="acme", project="chart", plan="A-set")
    resp = client.submit(str(corpus / PDF), plan, jobs_pb2.JobOptions(dpi=60))
    job = wait_ended(client, resp.job_id, timeout=240)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.completed_pages == job.total_pages == 8
    for record in job.pages:
        check_page(s3, record, str(corpus / PDF))
    manifest = json.loads(s3.get_object(Bucket="planzoom", Key=job.manifest_key)["Body"].read())
    assert manifest["state"] == "JOB_STATE_COMPLETE"
    # Both tile pods cut pages, and both progress pods folded the job's events.
    tiled = [p for p in cluster.pods_of(f"{RELEASE}-planzoom-tile") if resp.job_id in p.logs()]
    assert len(tiled) == 2, "8 pages went through both tile pods"
    folded = {p.name: folded_events(p) for p in cluster.pods_of(f"{RELEASE}-planzoom-progress")}
    print("events folded per progress pod:", folded)
    assert len(folded) == 2 and all(folded.values()), folded
    # The command the release's NOTES give works as written (TLS, the
    # certificate checked against the Service's name).
    notes = render_notes(cluster.values)
    assert f"--tls-server-name {RELEASE}-planzoom-ingest" in notes
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "planzoom"), "--ingest-addr", cluster.ingest.addr,
         "--progress-addr", cluster.progress.addr, "--ca-file", str(cluster.ca_file),
         "--tls-server-name", f"{RELEASE}-planzoom-ingest", "submit", str(corpus / PDF),
         "--org", "acme", "--project", "chart", "--plan", "notes", "--dpi", "30", "--watch"],
        env={**os.environ, "PLANZOOM_TOKEN": cluster.issuer.mint("acme", "uploader")},
        capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "COMPLETE" in cli.stdout + cli.stderr
    # The gateway reaches progress over TLS by the Service's name.
    (gw,) = cluster.pods_of(f"{RELEASE}-planzoom-gateway")[:1]
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.port('http')}/v1/jobs/{resp.job_id}",
        headers={"Authorization": f"Bearer {cluster.issuer.mint('acme', 'viewer')}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        assert json.loads(r.read())["state"] == "JOB_STATE_COMPLETE"


def test_rolling_restart_of_every_deployment_loses_nothing(cluster, client, s3, corpus):
    """Jobs keep coming while each Deployment is restarted, one after the
    other, as ``kubectl rollout restart`` would: every job completes with
    every page counted once, no watcher sees a step back, and every gRPC
    pod reads NOT_SERVING on its probe port while it drains."""
    plan = jobs_pb2.PlanRef(org="acme", project="chart", plan="rolling")
    submitted: list[str] = []
    retries: list[str] = []
    stop = threading.Event()
    watches: dict[str, list[tuple[int, int]]] = {}
    watchers: list[threading.Thread] = []

    def watch(job_id: str) -> None:
        seen = watches.setdefault(job_id, [])
        for job in client.follow(job_id, give_up_after=120):
            seen.append((job.revision, job.completed_pages))

    failures: list[BaseException] = []

    def submit_forever() -> None:
        try:
            submit_until_stopped()
        except BaseException as e:  # the test fails on it below, not as a thread's warning
            failures.append(e)

    def submit_until_stopped() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # A distinct file per submit: identical ones are deduplicated.
            options = jobs_pb2.JobOptions(dpi=40 + n)
            for _ in range(20):
                try:
                    resp = client.submit(str(corpus / PDF), plan, options)
                    break
                except grpc.RpcError as e:  # ingest pod going away: a client retries
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    retries.append(e.details() or "")
                    time.sleep(0.5)
            else:
                raise AssertionError("ingest stayed unavailable")
            submitted.append(resp.job_id)
            t = threading.Thread(target=watch, args=(resp.job_id,), daemon=True)
            t.start()
            watchers.append(t)
            stop.wait(3)

    submitter = threading.Thread(target=submit_forever, daemon=True)
    submitter.start()
    rolled = {}
    try:
        time.sleep(3)
        for component in ("tile", "progress", "render", "ingest", "gateway", "transcode"):
            rolled[component] = cluster.rolling_restart(f"{RELEASE}-planzoom-{component}")
    finally:
        stop.set()
        submitter.join(120)
    assert not failures, f"a submit failed during the restarts: {failures[0]!r}"
    assert submitted, "no job was submitted"
    assert len(set(submitted)) == len(submitted)
    for job_id in submitted:
        job = wait_ended(client, job_id, timeout=300)
        assert job.state == jobs_pb2.JOB_STATE_COMPLETE, (job_id, job.error)
        assert job.completed_pages == job.total_pages == len(job.pages) == 8
        assert all(p.state == jobs_pb2.PAGE_STATE_DONE for p in job.pages)
    for t in watchers:
        t.join(60)
    for job_id, seen in watches.items():
        assert [c for _, c in seen] == sorted(c for _, c in seen), f"{job_id} went back"
        assert seen and seen[-1][1] == 8
    # Pages of the last job are whole in S3.
    for record in client.get_job(submitted[-1]).pages:
        check_page(s3, record, str(corpus / PDF), compare=False)

    print(f"\n{len(submitted)} jobs during the rolling restarts; "
          f"{len(retries)} submits retried on UNAVAILABLE")
    for component, pairs in rolled.items():
        for old, new in pairs:
            statuses = sorted({seen for _, _, seen in old.drain_probes})
            print(f"{component}: {old.name} -> {new.name}: stopped in {old.stop_seconds:.1f} s, "
                  f"exit {old.exit_code}, health watch {old.drain_watch}, probes {statuses}")
            assert old.exit_code == 0, f"{old.name} did not stop cleanly:\n{old.logs()[-2000:]}"
            if component != "gateway":
                assert "NOT_SERVING" in old.drain_watch, (
                    f"{old.name}: the health status while draining was {old.drain_watch}")
            assert old.stop_seconds < cluster.grace(old)
