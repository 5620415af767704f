"""The Helm chart under deploy/k8s/planzoom, checked without a cluster:
strict lint, render under default values and variants, every manifest
validated against the Kubernetes schemas, own checks for KEDA's
ScaledObject (a CRD the schemas do not cover) and for what operators rely on."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from planzoom import metrics
from tests.conftest import ROOT

CHART = ROOT / "deploy" / "k8s" / "planzoom"
K8S_VERSION = "1.30.0"
COMPONENTS = ("gateway", "ingest", "progress", "render", "tile", "transcode")

MINIO = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}},
         "podSelector": {"matchLabels": {"app": "minio"}}}
VARIANTS = {
    "defaults": {},
    "keda-off": {"keda": {"enabled": False}},
    "network-policy": {"networkPolicy": {
        "enabled": True, "clientNamespaceSelector": {"matchLabels": {"team": "x"}}}},
    "minio-and-nats-creds": {"s3": {"endpointUrl": "http://minio.storage:9000",
                                    "createBucket": True, "credentialsSecret": "minio-keys"},
                             "nats": {"url": "tls://nats.nats:4222",
                                      "credentialsSecret": "planzoom-nats"},
                             "networkPolicy": {"s3": {"ports": [9000], "to": [MINIO]}}},
    "registry-and-tag": {"image": {"registry": "registry.example.com/plans", "tag": "1.2.3"},
                         "config": {"PLANZOOM_DEFAULT_DPI": "200", "PLANZOOM_MAX_PAGES": 500}},
    "render-disabled": {"components": {"render": {"enabled": False, "grpcPort": 50053}}},
    "alerts": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}},
    "tls-users-jwks": {"tls": {"secretName": "pz-tls"}, "nats": {"usersSecret": "pz-nats"},
                       "auth": {"jwksUrl": "https://id.example.com/jwks.json",
                                "publicKeySecret": ""},
                       "quotas": {"jobsInFlight": 3, "pagesInFlight": 8,
                                  "pixelsInFlight": 5_000_000_000}},
    "iam-role": {"s3": {"credentialsSecret": ""},
                 "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:x"}}},
}


def secured(values: dict) -> dict:
    """``values`` with what the chart requires unless ``insecure``: NATS
    credentials and a TLS Secret (where ``values`` names none)."""
    nats, tls = dict(values.get("nats", {})), dict(values.get("tls", {}))
    if not (nats.get("usersSecret") or nats.get("credentialsSecret")):
        nats["credentialsSecret"] = "pz-nats-creds"
    tls["secretName"] = tls.get("secretName") or "pz-tls"
    return {**values, "nats": nats, "tls": tls}


def render(values: dict, secure: bool = True) -> list[dict]:
    """The manifests of the chart at ``values`` (made ``secured`` first
    unless ``secure`` is False)."""
    if secure:
        values = secured(values)
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="pz", namespace="plans")
    docs = []
    for name, text in out.items():
        if name.endswith(".txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_is_clean():
    result = helm.lint(str(CHART), values=secured({}), strict=True)
    assert result["errors"] == []
    problems = [m for m in result["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_valid_manifests(variant):
    docs = render(VARIANTS[variant])
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue  # CRDs: checked below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deployments_are_locked_down_and_probed():
    docs = render({})
    deployments = by_kind(docs, "Deployment")
    assert sorted(deployments) == [f"pz-planzoom-{c}" for c in sorted(COMPONENTS)]
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] and pod["runAsUser"] == 10001
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        port = container["ports"][0]["containerPort"]
        if name.endswith("gateway"):  # HTTP: /readyz, /healthz on its named port
            assert container["ports"][0]["name"] == "http"
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        else:
            # Probes go to the plaintext health listener, which TLS leaves alone.
            health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
            assert container["readinessProbe"]["grpc"]["port"] == health != port
            assert container["livenessProbe"]["grpc"]["port"] == health
            health_addr = {"name": "PLANZOOM_HEALTH_ADDR", "value": f"0.0.0.0:{health}"}
            assert health_addr in container["env"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
        # Longer than the gRPC grace plus the JetStream ack wait.
        assert spec["terminationGracePeriodSeconds"] > 10 + 60
        env = {e["name"]: e for e in container["env"]}
        component = name.rsplit("-", 1)[1]
        assert env[f"PLANZOOM_{component.upper()}_ADDR"]["value"] == f"0.0.0.0:{port}"
        # One least-privilege S3 key per component (docs/s3-policies.md).
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == \
            f"planzoom-s3-{component}"


def test_no_credentials_in_rendered_output():
    docs = render(VARIANTS["minio-and-nats-creds"])
    for cm in by_kind(docs, "ConfigMap").values():
        assert not any("SECRET" in k or "PASSWORD" in k for k in cm["data"])
    assert not by_kind(docs, "Secret"), "the chart must only reference existing Secrets"
    d = by_kind(docs, "Deployment")["pz-planzoom-tile"]["spec"]["template"]["spec"]
    assert {"name": "nats-creds", "secret": {"secretName": "planzoom-nats",
            "items": [{"key": "nats.creds", "path": "nats.creds"}]}} in d["volumes"]


def test_tls_nats_users_and_issuer_reach_every_component():
    docs = render(VARIANTS["tls-users-jwks"])
    (cm,) = by_kind(docs, "ConfigMap").values()
    assert cm["data"]["PLANZOOM_AUTH_JWKS"] == "https://id.example.com/jwks.json"
    assert "PLANZOOM_AUTH_PUBLIC_KEY_FILE" not in cm["data"]
    assert cm["data"]["PLANZOOM_NATS_SETUP"] == "false"
    assert cm["data"]["PLANZOOM_TLS_CA_FILE"] == "/etc/planzoom/tls/ca.crt"
    quotas = [cm["data"][f"PLANZOOM_ORG_MAX_{q}_IN_FLIGHT"] for q in ("JOBS", "PAGES", "PIXELS")]
    assert quotas == ["3", "8", "5000000000"]
    for name, d in by_kind(docs, "Deployment").items():
        component = name.rsplit("-", 1)[1]
        spec = d["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["PLANZOOM_NATS_USER"]["value"] == f"planzoom-{component}"
        assert env["PLANZOOM_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "pz-nats", "key": component}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/planzoom/tls", "readOnly": True}
        assert "issuer" not in mounts
        if component != "gateway":  # the gateway serves HTTP; it only checks the servers
            assert env["PLANZOOM_TLS_CERT_FILE"]["value"] == "/etc/planzoom/tls/tls.crt"
    (job,) = by_kind(docs, "Job").values()
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    assert hooks == "pre-install,pre-upgrade", "streams exist before any service starts"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert container["command"] == ["python", "-m", "planzoom.messaging.setup"]
    assert env["PLANZOOM_NATS_USER"]["value"] == "planzoom-setup"
    assert {k: env[k]["value"] for k in cm["data"]} == cm["data"], "the ConfigMap's settings"


def test_traces_are_off_unless_an_endpoint_is_given():
    (cm,) = by_kind(render({}), "ConfigMap").values()
    assert not any(k.startswith("OTEL_") for k in cm["data"])
    (cm,) = by_kind(render({"otel": {"endpoint": "http://otel.obs:4318", "env": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": 0.1}}}),
        "ConfigMap").values()
    assert cm["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel.obs:4318"
    assert cm["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    with pytest.raises(Exception, match="OTEL_"):
        render({"otel": {"env": {"PLANZOOM_X": "1"}}})


def test_defaults_refuse_an_installation_open_to_the_cluster():
    """``helm template`` with the chart's defaults: no NATS credentials, no
    TLS, so it refuses, naming what to set; ``insecure: true`` renders."""
    with pytest.raises(Exception, match="NATS has no credentials"):
        render({}, secure=False)
    with pytest.raises(Exception, match="no TLS"):
        render({"nats": {"usersSecret": "pz-nats"}}, secure=False)
    docs = render({"insecure": True}, secure=False)
    assert by_kind(docs, "Deployment")
    assert by_kind(docs, "NetworkPolicy"), "network policies are on by default"


def test_one_s3_credential_for_all_is_a_choice():
    docs = render({"s3": {"perComponentCredentials": False}})
    for d in by_kind(docs, "Deployment").values():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "planzoom-s3"


def test_default_issuer_key_comes_from_a_secret():
    docs = render({})
    assert not by_kind(docs, "Job"), "no setup Job without per-service NATS users"
    for d in by_kind(docs, "Deployment").values():
        spec = d["spec"]["template"]["spec"]
        assert {"name": "issuer", "secret": {"secretName": "planzoom-issuer", "items": [
            {"key": "public-key.pem", "path": "public-key.pem"}]}} in spec["volumes"]
    with pytest.raises(Exception, match="auth.publicKeySecret or auth.jwksUrl"):
        render({"auth": {"publicKeySecret": ""}})


def test_scaled_objects_read_the_queue_depth_the_progress_service_exports():
    docs = render({})
    scaled = by_kind(docs, "ScaledObject")
    expected = {"pz-planzoom-render": metrics.RENDER_QUEUE, "pz-planzoom-tile": metrics.TILE_QUEUE,
                "pz-planzoom-transcode": metrics.TRANSCODE_QUEUE}
    assert sorted(scaled) == sorted(expected)
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    progress_metrics = {p["name"]: p["port"]
                        for p in services["pz-planzoom-progress"]["spec"]["ports"]}
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] == name and name in deployments
        assert 0 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "metrics-api"
        meta = trigger["metadata"]
        assert meta["format"] == "prometheus"
        assert meta["valueLocation"] == expected[name]._name, "the gauge the service exports"
        assert meta["url"] == (f"http://pz-planzoom-progress.plans.svc:"
                               f"{progress_metrics['metrics']}/metrics")
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata are strings"
        assert int(meta["targetValue"]) >= 1
    # Ingest and progress scale on CPU; no HPA competes with KEDA.
    assert sorted(by_kind(docs, "HorizontalPodAutoscaler")) == [
        "pz-planzoom-gateway", "pz-planzoom-ingest", "pz-planzoom-progress"]


def test_hpa_fallback_when_keda_is_off():
    docs = render(VARIANTS["keda-off"])
    assert not by_kind(docs, "ScaledObject")
    assert sorted(by_kind(docs, "HorizontalPodAutoscaler")) == [
        f"pz-planzoom-{c}" for c in sorted(COMPONENTS)]


def test_services_only_for_apis():
    services = by_kind(render({}), "Service")
    assert sorted(services) == ["pz-planzoom-gateway", "pz-planzoom-ingest",
                                "pz-planzoom-progress"]
    for name, svc in services.items():
        port = svc["spec"]["ports"][0]
        assert port["appProtocol"] == ("http" if name.endswith("gateway") else "grpc")
        assert port["targetPort"] == port["name"] == port["appProtocol"]


def test_gateway_reaches_progress_and_shares_its_signing_key():
    docs = render({})
    (container,) = by_kind(docs, "Deployment")["pz-planzoom-gateway"]["spec"]["template"][
        "spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    progress = by_kind(docs, "Service")["pz-planzoom-progress"]["spec"]["ports"][0]["port"]
    assert env["PLANZOOM_PROGRESS_ADDR"]["value"] == f"pz-planzoom-progress:{progress}"
    assert env["PLANZOOM_GATEWAY_ADDR"]["value"] == "0.0.0.0:8080"
    assert env["PLANZOOM_GATEWAY_SIGNING_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "planzoom-gateway", "key": "signing-key"}
    policy = by_kind(render(VARIANTS["network-policy"]), "NetworkPolicy")["pz-planzoom-gateway"]
    assert {"port": 8080, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


def test_images_follow_registry_and_tag():
    docs = render(VARIANTS["registry-and-tag"])
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in by_kind(docs, "Deployment").values()}
    assert images == {f"registry.example.com/plans/planzoom-{c}:1.2.3" for c in COMPONENTS}
    cm = next(iter(by_kind(docs, "ConfigMap").values()))
    assert cm["data"]["PLANZOOM_MAX_PAGES"] == "500"


@pytest.mark.parametrize("bad", [
    {"s3": {"bucket": "Bad_Bucket!"}},
    {"nats": {"url": "http://nats:4222"}},
    {"nats": {"url": "nats://nats-0:4222,http://nats-1:4222"}},
    {"nats": {"replicas": 2}},
    {"components": {"tile": {"enabled": True, "grpcPort": 70000}}},
    {"config": {"NOT_PLANZOOM": "1"}},
    {"image": {"repository": "planzoom", "pullPolicy": "Sometimes"}},
])
def test_schema_rejects_bad_values(bad):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})  # the defaults pass
        with pytest.raises(helm.errors.HelmValuesError):
            chart.validate_schema(bad)


def test_jetstream_is_replicated_on_three_servers_by_default():
    (cm,) = by_kind(render({}), "ConfigMap").values()
    assert cm["data"]["PLANZOOM_NATS_REPLICAS"] == "3"
    several = "nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222"
    (cm,) = by_kind(render({"nats": {"url": several, "replicas": 1}}), "ConfigMap").values()
    assert (cm["data"]["PLANZOOM_NATS_URL"], cm["data"]["PLANZOOM_NATS_REPLICAS"]) == (several, "1")
    nats = yaml.safe_load((ROOT / "deploy" / "k8s" / "nats" / "values.yaml").read_text())
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}


def test_notes_tell_how_to_submit():
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render({"insecure": True}, name="pz",
                             namespace="plans")["planzoom/templates/NOTES.txt"]
        tls = chart.render(secured({}), name="pz",
                           namespace="plans")["planzoom/templates/NOTES.txt"]
    assert "planzoom submit" in notes and "svc/pz-planzoom-ingest" in notes
    assert "--tls-server-name" not in notes
    # With TLS: the CA from the Secret, and the name the certificate carries
    # (the port-forward's address is localhost). tests/e2e runs this command.
    assert "secret pz-tls" in tls and "--tls-server-name pz-planzoom-ingest" in tls


def test_the_documented_nats_users_are_the_ones_the_stack_runs():
    from planzoom.messaging.permissions import users_conf

    readme = (CHART / "README.md").read_text()
    assert users_conf() in readme, "deploy/k8s/planzoom/README.md has an old NATS users block"
    shipped = (CHART / "files" / "nats-users.conf").read_text()
    assert shipped == users_conf(), "deploy/k8s/planzoom/files/nats-users.conf is old"


def test_each_pod_knows_its_scratch_volume():
    """Every Deployment's emptyDir and PLANZOOM_SCRATCH_BYTES say the same
    size: the component's tmpSizeLimit, else tmp.sizeLimit."""
    docs = render({"tmp": {"sizeLimit": "3Gi"}, "components": {
        "tile": {"enabled": True, "grpcPort": 50054, "tmpSizeLimit": "512Mi"}}})
    sizes = {}
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "tmp"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["PLANZOOM_SCRATCH_BYTES"] == volume["emptyDir"]["sizeLimit"], name
        sizes[name.removeprefix("pz-planzoom-")] = volume["emptyDir"]["sizeLimit"]
    assert sizes == {"gateway": "3Gi", "ingest": "12Gi", "progress": "3Gi", "render": "8Gi",
                     "tile": "512Mi", "transcode": "24Gi"}
    defaults = by_kind(render({}), "Deployment")
    assert {n: [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"][0][
        "emptyDir"]["sizeLimit"] for n, d in defaults.items()} == {
        "pz-planzoom-gateway": "4Gi", "pz-planzoom-ingest": "12Gi", "pz-planzoom-progress": "4Gi",
        "pz-planzoom-render": "8Gi", "pz-planzoom-tile": "4Gi", "pz-planzoom-transcode": "24Gi"}


def test_only_ingest_and_progress_hold_the_work_grants_key():
    """The key that signs work grants reaches the two services that hand out
    work, never the stages that do it; with no Secret named, none."""
    def holders(docs):
        return {name.removeprefix("pz-planzoom-") for name, d in by_kind(docs, "Deployment").items()
                if any(e["name"] == "PLANZOOM_WORK_GRANT_KEY"
                       for e in d["spec"]["template"]["spec"]["containers"][0]["env"])}

    docs = render({})
    assert holders(docs) == {"ingest", "progress"}
    [ingest] = [d for n, d in by_kind(docs, "Deployment").items() if n.endswith("-ingest")]
    [env] = [e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]
             if e["name"] == "PLANZOOM_WORK_GRANT_KEY"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "planzoom-work-grants", "key": "key"}
    assert holders(render({"workGrants": {"keySecret": ""}})) == set()


def test_alerts_name_only_metrics_planzoom_exports():
    """The PrometheusRule's alerts: each expression parses as far as a
    metric name goes, and every planzoom_* name in it is one a service
    exports (a renamed metric would otherwise silence its alert)."""
    import re

    from prometheus_client import REGISTRY

    exported = {m.name for m in REGISTRY.collect() if m.name.startswith("planzoom_")}
    exported |= {f"{n}_total" for n in exported}
    rule = by_kind(render(VARIANTS["alerts"]), "PrometheusRule")["pz-planzoom"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"PlanzoomJobsStalled", "PlanzoomDeadLetters", "PlanzoomQueueBacklog",
                           "PlanzoomRedeliveries", "PlanzoomInternalErrors"}
    for name, alert in alerts.items():
        used = set(re.findall(r"planzoom_[a-z_]+", alert["expr"]))
        assert used and used <= exported, (name, used - exported)
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert by_kind(render({}), "PrometheusRule") == {}, "off unless asked for"
