"""The chart's NetworkPolicies, rendered without a cluster: each component
may receive and send exactly the documented traffic (the policy
template's header and docs/threat-model.md say what)."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_chart import COMPONENTS, MINIO, by_kind, render


def _rules(rules: list[dict], peers: str) -> set[tuple]:
    """Each rule as (ports, peers) in a comparable form."""
    return {(tuple(sorted((p["port"], p["protocol"]) for p in r["ports"])),
             json.dumps(r.get(peers, "anywhere"), sort_keys=True)) for r in rules}


def test_network_policies_allow_exactly_the_documented_traffic():
    """Rendered with client and scrape namespaces set: API ports from the
    clients (ingest and progress also from the gateway), metrics from the
    scrapers; out to DNS, NATS and S3 only, the gateway also to ingest,
    progress and public webhook endpoints. Nothing else."""
    team = {"matchLabels": {"team": "x"}}
    docs = render({"networkPolicy": {"enabled": True, "clientNamespaceSelector": team,
                                     "metricsNamespaceSelector": {"matchLabels": {"m": "y"}},
                                     "s3": {"ports": [443, 9000]}}})
    policies = by_kind(docs, "NetworkPolicy")
    assert sorted(policies) == [f"pz-planzoom-{c}" for c in COMPONENTS]

    def pods(component):
        return json.dumps([{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "planzoom", "app.kubernetes.io/instance": "pz",
            "app.kubernetes.io/component": component}}}], sort_keys=True)

    clients = json.dumps([{"namespaceSelector": team}], sort_keys=True)
    scrapers = json.dumps([{"namespaceSelector": {"matchLabels": {"m": "y"}}}], sort_keys=True)
    ports = {"ingest": 50051, "progress": 50052, "gateway": 8080}
    public = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
        "100.64.0.0/10", "0.0.0.0/8"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10", "::1/128"]}}]
    common_egress = {
        ((53, "TCP"), (53, "UDP")): json.dumps([{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}], sort_keys=True),
        ((4222, "TCP"),): json.dumps([{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "nats"}}}], sort_keys=True),
        # AWS S3 (no endpoint set): public addresses only
        ((443, "TCP"), (9000, "TCP")): json.dumps(public, sort_keys=True),
    }
    for component in COMPONENTS:
        spec = policies[f"pz-planzoom-{component}"]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        ingress = {(((9102, "TCP"),), scrapers)}
        if component in ports:
            ingress.add((((ports[component], "TCP"),), clients))
        if component in ("ingest", "progress"):
            ingress.add((((ports[component], "TCP"),), pods("gateway")))
        assert _rules(spec["ingress"], "from") == ingress, component
        egress = set(common_egress.items())
        if component == "gateway":
            egress |= {(((50051, "TCP"),), pods("ingest")), (((50052, "TCP"),), pods("progress"))}
            egress.add((((80, "TCP"), (443, "TCP")), json.dumps(public, sort_keys=True)))
        assert _rules(spec["egress"], "to") == egress, component


def test_an_s3_endpoint_of_ones_own_must_be_named_for_egress():
    """With s3.endpointUrl set (MinIO, SeaweedFS, ...) the pods' S3 egress
    goes to networkPolicy.s3.to only; left empty, the chart refuses to
    render (any address on the endpoint's ports is no policy), unless
    insecure."""
    minio = {"s3": {"endpointUrl": "http://minio.storage:9000"},
             "networkPolicy": {"s3": {"ports": [9000]}}}
    with pytest.raises(Exception, match="networkPolicy.s3.to must name the S3 endpoint"):
        render(minio)
    named = {**minio, "networkPolicy": {"s3": {"ports": [9000], "to": [MINIO]}}}
    for policy in by_kind(render(named), "NetworkPolicy").values():
        [rule] = [r for r in policy["spec"]["egress"] if r["ports"] == [
            {"port": 9000, "protocol": "TCP"}]]
        assert rule["to"] == [MINIO]
    insecure = by_kind(render({**minio, "insecure": True}, secure=False), "NetworkPolicy")
    assert insecure, "insecure renders, S3 open on its ports"


def test_default_network_policy_lets_any_client_reach_the_apis():
    """Policies are on by default. With no client namespaces set, an API
    port takes any caller (the gateway needs no rule of its own); with
    networkPolicy.enabled false there are no policies at all."""
    assert by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == {}
    policies = by_kind(render({}), "NetworkPolicy")
    ingest = policies["pz-planzoom-ingest"]["spec"]["ingress"]
    assert [r for r in ingest if "from" not in r] == [
        {"ports": [{"port": 50051, "protocol": "TCP"}]}]
    assert len(ingest) == 2
