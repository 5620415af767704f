"""Identity and org scoping against the running stack: each attack a tenant
could try on another tenant's jobs and plans is refused with the right
code, and the victim's job is untouched."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from planzoom.v1 import ingest_pb2, jobs_pb2
from planzoom_cli.client import Client
from tests.helpers import list_keys, wait_ended
from tests.integration.conftest import client_for

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
VICTIM = jobs_pb2.PlanRef(org="acme", project="access", plan="siteplan")


@pytest.fixture(scope="module")
def victim_job(corpus, client):
    resp = client.submit(str(corpus / SITEPLAN), VICTIM, jobs_pb2.JobOptions(dpi=40))
    return wait_ended(client, resp.job_id)


@pytest.fixture(scope="module")
def intruder(stack):
    """An admin of another org: every role, the wrong org."""
    c = client_for(stack, org="intruder", role="admin")
    yield c
    c.close()


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_another_orgs_jobs_look_like_no_job(intruder, victim_job, client, s3):
    job_id = victim_job.job_id
    request = jobs_pb2.GetJobRequest(job_id=job_id)
    assert _code(lambda: intruder.progress.GetJob(request, timeout=10)) == \
        grpc.StatusCode.NOT_FOUND
    assert _code(lambda: intruder.ingest.GetJob(request, timeout=10)) == \
        grpc.StatusCode.NOT_FOUND
    assert _code(lambda: list(intruder.watch(job_id, timeout=10))) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: intruder.cancel(job_id, "mine now")) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: intruder.reconcile(job_id)) == grpc.StatusCode.NOT_FOUND
    # The same answer as for a job that does not exist: ids cannot be probed.
    with pytest.raises(grpc.RpcError) as unknown:
        intruder.get_job("0" * 22)
    with pytest.raises(grpc.RpcError) as foreign:
        intruder.get_job(job_id)
    assert unknown.value.details().replace("0" * 22, "ID") == \
        foreign.value.details().replace(job_id, "ID")
    # Untouched: its owner still sees it COMPLETE, no "mine now" in its manifest.
    again = client.get_job(job_id)
    assert again.state == jobs_pb2.JOB_STATE_COMPLETE and again.revision == victim_job.revision
    manifest = s3.get_object(Bucket="planzoom", Key=victim_job.manifest_key)["Body"].read()
    assert b"mine now" not in manifest


def test_another_orgs_plans_are_permission_denied(corpus, intruder, victim_job, s3):
    assert _code(lambda: intruder.list_jobs(VICTIM)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: intruder.ingest.CreateUploadUrl(
        ingest_pb2.CreateUploadUrlRequest(plan=VICTIM), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: intruder.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(
        plan=VICTIM, object_key=f"uploads/acme/access/siteplan/{'a' * 32}"), timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    before = list_keys(s3, "sources/acme/access/")
    assert _code(lambda: intruder.submit(str(corpus / SITEPLAN), VICTIM,
                                         jobs_pb2.JobOptions(dpi=41))) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert list_keys(s3, "sources/acme/access/") == before


def test_roles(corpus, stack, victim_job):
    viewer = client_for(stack, role="viewer")
    uploader = client_for(stack, role="uploader")
    try:
        assert viewer.get_job(victim_job.job_id).job_id == victim_job.job_id
        assert [j.job_id for j in viewer.list_jobs(VICTIM)] == [victim_job.job_id]
        assert _code(lambda: viewer.submit(str(corpus / SITEPLAN), VICTIM,
                                           jobs_pb2.JobOptions(dpi=42))) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: uploader.cancel(victim_job.job_id)) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: uploader.reconcile(victim_job.job_id)) == \
            grpc.StatusCode.PERMISSION_DENIED
    finally:
        viewer.close()
        uploader.close()


def test_no_token_and_expired_token_are_unauthenticated(stack, victim_job):
    env = stack.env()
    anonymous = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"])
    expired = client_for(stack, ttl=-300)
    try:
        for c in (anonymous, expired):
            assert _code(lambda c=c: c.get_job(victim_job.job_id)) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert _code(lambda c=c: c.list_jobs(VICTIM)) == grpc.StatusCode.UNAUTHENTICATED
            assert _code(lambda c=c: c.ingest.CreateUploadUrl(
                ingest_pb2.CreateUploadUrlRequest(plan=VICTIM), timeout=10)) == \
                grpc.StatusCode.UNAUTHENTICATED
    finally:
        anonymous.close()
        expired.close()


def test_health_is_public_and_reflection_is_off(stack):
    env = stack.env()
    for name in ("INGEST", "PROGRESS", "RENDER", "TILE"):
        with grpc.insecure_channel(env[f"PLANZOOM_{name}_ADDR"]) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(env["PLANZOOM_PROGRESS_ADDR"]) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_speaks_tls_when_a_certificate_is_configured(stack, tmp_path):
    """A service given a certificate (here from a throwaway CA) serves TLS
    only: a client that trusts the CA gets through, a plaintext one does not."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_file, cert_file, ca_file = (tmp_path / "key.pem", tmp_path / "cert.pem",
                                    tmp_path / "ca.pem")
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    ca.cert_pem.write_to_path(ca_file)
    name = stack.start_service("ingest", replica=5, env={
        "PLANZOOM_TLS_CERT_FILE": str(cert_file), "PLANZOOM_TLS_KEY_FILE": str(key_file),
        "PLANZOOM_TLS_CA_FILE": str(ca_file)})
    token = stack.token("acme", "viewer")
    secure = Client(stack.addrs[name], stack.addrs[name], token=token, ca_file=str(ca_file))
    plain = Client(stack.addrs[name], stack.addrs[name], token=token)
    try:
        with pytest.raises(grpc.RpcError) as e:
            secure.ingest.GetJob(jobs_pb2.GetJobRequest(job_id="0" * 22), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, "the call went through, over TLS"
        with pytest.raises(grpc.RpcError) as e:
            plain.ingest.GetJob(jobs_pb2.GetJobRequest(job_id="0" * 22), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        secure.close()
        plain.close()
        stack.stop_service(name)
