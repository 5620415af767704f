"""Webhooks against the running stack: a receiver on 127.0.0.1 that checks
Standard Webhooks signatures with the standard library alone, retries after
a 500, a dead letter once the attempts run out, deliveries that wait out a
gateway restart, the SSRF guard, and every refusal."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from planzoom.v1 import jobs_pb2
from tests.conftest import CORPUS
from tests.helpers import wait_ended, wait_until
from tests.integration.conftest import client_for
from tests.integration.test_gateway import assert_problem, bearer

ORG = "hooks"
SMALL = "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"
RETRY_SECONDS = 2.0
MAX_ATTEMPTS = 3


class Receiver:
    """An HTTP server that records every POST. A path answers 500 while it
    is in ``failing`` (or its first ``fail_first[path]`` times), else 204;
    ``/trickle`` sends its header lines a byte every half second, ``/huge``
    a 200 with a 256 MiB body, ``/hang…`` answers after 10 s."""

    def __init__(self):
        self.received: list[dict] = []
        self.failing: set[str] = set()
        self.fail_first: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    seen = sum(1 for r in receiver.received if r["path"] == self.path)
                    receiver.received.append({"path": self.path, "headers": dict(
                        (k.lower(), v) for k, v in self.headers.items()), "body": body,
                        "at": time.time()})
                    fail = self.path in receiver.failing or \
                        seen < receiver.fail_first.get(self.path, 0)
                try:
                    if self.path.startswith("/hang"):
                        time.sleep(10)  # answers, but only after the deadline
                    if self.path == "/trickle":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        for _ in range(60):  # 30 s at most
                            self.wfile.write(b"X")
                            self.wfile.flush()
                            time.sleep(0.5)
                        return
                    if self.path == "/huge":
                        self.send_response(200)
                        self.send_header("content-length", str(256 << 20))
                        self.end_headers()
                        for _ in range(256):
                            self.wfile.write(bytes(1 << 20))
                        return
                except OSError:
                    return  # the gateway hung up, as it should
                self.send_response(500 if fail else 204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verified(secret: str, request: dict) -> bool:
    """Standard Webhooks verification with hmac and base64 only."""
    headers = request["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + \
        request["body"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(hmac.compare_digest(s.partition(",")[2], expected)
                         for s in headers["webhook-signature"].split() if s.startswith("v1,"))


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gateway(stack):
    """The stack's gateway with short webhook retries, restored afterwards."""
    env = {"PLANZOOM_WEBHOOK_RETRY_SECONDS": str(RETRY_SECONDS),
           "PLANZOOM_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
           "PLANZOOM_WEBHOOK_TIMEOUT_SECONDS": "3"}
    stack.stop_service("gateway")
    url = stack.start_gateway(env=env)
    yield url, env
    stack.stop_service("gateway")
    stack.start_gateway()


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway[0], timeout=30) as c:
        yield c


def register(http, stack, url: str, events=None, org=ORG) -> dict:
    body = {"url": url, **({"events": events} if events else {})}
    resp = http.post("/v1/webhooks", json=body, headers=bearer(stack, org, "admin"))
    assert resp.status_code == 201, resp.text
    return resp.json()


def run_job(stack, plan: str) -> jobs_pb2.Job:
    client = client_for(stack, org=ORG)
    try:
        reply = client.submit(str(CORPUS / SMALL), jobs_pb2.PlanRef(
            org=ORG, project="hooks", plan=plan), jobs_pb2.JobOptions(dpi=20))
        return wait_ended(client, reply.job_id)
    finally:
        client.close()


def test_an_ended_job_is_delivered_signed_to_its_orgs_endpoints(stack, http, receiver):
    done = register(http, stack, receiver.url("/done"), ["job.completed"])
    failed_only = register(http, stack, receiver.url("/failed-only"), ["job.failed"])
    assert done["secret"].startswith("whsec_") and done["events"] == ["job.completed"]
    listed = http.get("/v1/webhooks", headers=bearer(stack, ORG, "admin")).json()["webhooks"]
    assert {e["id"] for e in listed} >= {done["id"], failed_only["id"]}
    assert all("secret" not in e for e in listed), "a secret was shown twice"
    assert http.get("/v1/webhooks", headers=bearer(stack, "acme", "admin")).json() == \
        {"webhooks": []}, "another org sees this org's endpoints"

    job = run_job(stack, "delivered")
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE
    wait_until("the delivery", lambda: receiver.at("/done"), timeout=30)
    time.sleep(1)
    [request] = receiver.at("/done")
    assert verified(done["secret"], request), "the signature does not verify"
    assert not verified(failed_only["secret"], request)
    event = json.loads(request["body"])
    assert event["type"] == "job.completed" and event["data"]["job_id"] == job.job_id
    assert event["data"]["plan"]["org"] == ORG and event["data"]["completed_pages"] == 7
    assert request["headers"]["webhook-id"] == f"msg_{job.job_id}_{done['id']}"
    assert receiver.at("/failed-only") == [], "an endpoint got an event it did not ask for"


def test_a_500_is_retried_and_a_dead_endpoint_ends_in_a_dead_letter(stack, http, receiver):
    receiver.fail_first["/flaky"] = 1
    receiver.failing.add("/down")
    flaky = register(http, stack, receiver.url("/flaky"))
    down = register(http, stack, receiver.url("/down"))
    job = run_job(stack, "retried")
    wait_until("the retry", lambda: len(receiver.at("/flaky")) >= 2, timeout=30)
    first, second = receiver.at("/flaky")[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert second["at"] - first["at"] >= RETRY_SECONDS * 0.9, "retried without backoff"
    assert verified(flaky["secret"], second)

    def dead():
        letters = http.get("/v1/webhooks/dead-letters",
                           headers=bearer(stack, ORG, "admin")).json()["dead_letters"]
        return [d for d in letters if d["endpoint_id"] == down["id"]]

    [letter] = wait_until("the dead letter", dead, timeout=60)
    assert letter["attempts"] == MAX_ATTEMPTS and "500" in letter["error"]
    assert letter["reason"] == "WEBHOOK_REFUSED"
    assert letter["payload"]["data"]["job_id"] == job.job_id
    assert len(receiver.at("/down")) == MAX_ATTEMPTS
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(receiver.at("/down"))]
    assert gaps[1] > gaps[0] * 1.5, f"the backoff does not grow: {gaps}"
    assert_problem(http.get("/v1/webhooks/dead-letters", headers=bearer(stack, ORG, "viewer")),
                   403)
    # removing the endpoint removes its dead letters
    assert http.delete(f"/v1/webhooks/{down['id']}",
                       headers=bearer(stack, ORG, "admin")).status_code == 204
    assert dead() == []


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_a_delivery_has_one_deadline_and_its_answer_is_not_read(stack, http, receiver):
    trickle = register(http, stack, receiver.url("/trickle"))
    register(http, stack, receiver.url("/huge"))
    before = _rss_mib(stack.procs["gateway"].pid)
    job = run_job(stack, "dawdled")

    def dead():
        letters = http.get("/v1/webhooks/dead-letters",
                           headers=bearer(stack, ORG, "admin")).json()["dead_letters"]
        return [d for d in letters if d["endpoint_id"] == trickle["id"]]

    # Each header byte comes within the timeout; the whole answer never does.
    [letter] = wait_until("the trickling endpoint's dead letter", dead, timeout=60)
    assert letter["reason"] == "WEBHOOK_UNREACHABLE" and "within 3 s" in letter["error"]
    assert letter["payload"]["data"]["job_id"] == job.job_id
    # A 200 ends the delivery at once: the 256 MiB after it are never read.
    assert len(receiver.at("/huge")) == 1
    assert _rss_mib(stack.procs["gateway"].pid) - before < 64


def test_a_delivery_waits_out_a_gateway_restart(stack, gateway, http, receiver):
    receiver.failing.add("/restart")
    hook = register(http, stack, receiver.url("/restart"))
    job = run_job(stack, "restart")
    wait_until("the first attempt", lambda: receiver.at("/restart"), timeout=30)
    stack.stop_service("gateway")
    receiver.failing.discard("/restart")
    attempts_while_down = len(receiver.at("/restart"))
    time.sleep(RETRY_SECONDS * 2)
    assert len(receiver.at("/restart")) == attempts_while_down
    stack.start_gateway(env=gateway[1])
    wait_until("the delivery after the restart",
               lambda: len(receiver.at("/restart")) > attempts_while_down, timeout=60)
    last = receiver.at("/restart")[-1]
    assert verified(hook["secret"], last)
    assert json.loads(last["body"])["data"]["job_id"] == job.job_id
    assert last["headers"]["webhook-id"] == receiver.at("/restart")[0]["headers"]["webhook-id"]


def test_refused_registrations(stack, http, receiver):
    admin = bearer(stack, ORG, "admin")
    assert_problem(http.post("/v1/webhooks", json={"url": receiver.url("/x")}), 401)
    assert_problem(http.post("/v1/webhooks", json={"url": receiver.url("/x")},
                             headers=bearer(stack, ORG, "uploader")), 403)
    for bad in ("ftp://example.com/", "http://user:pw@127.0.0.1/", "not a url",
                "http://no-such-host.invalid/", "http://[::1", "http://[::1]x/",
                "http://" + "a" * 64 + ".example.com/"):
        assert_problem(http.post("/v1/webhooks", json={"url": bad}, headers=admin), 400)
    assert_problem(http.post("/v1/webhooks", json={"url": receiver.url("/x"),
                                                   "events": ["job.exploded"]},
                             headers=admin), 400)
    assert_problem(http.delete("/v1/webhooks/0123456789abcdef", headers=admin), 404)
    mine = register(http, stack, receiver.url("/mine"))
    assert_problem(http.delete(f"/v1/webhooks/{mine['id']}",
                               headers=bearer(stack, "intruder", "admin")), 404)


def test_private_addresses_are_refused_unless_allowed(stack):
    url = stack.start_gateway(name="gateway-ssrf", env={
        "PLANZOOM_WEBHOOK_ALLOW_PRIVATE": "false", "PLANZOOM_WEBHOOK_WORKERS": "0"})
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            for target in ("http://127.0.0.1:9/", "http://localhost/", "http://[::1]/",
                           "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/",
                           "http://[::ffff:192.168.0.1]/", "http://0.0.0.0/",
                           # 169.254.169.254 as 6to4, NAT64 and Teredo's client
                           "http://[2002:a9fe:a9fe::1]/", "http://[64:ff9b::a9fe:a9fe]/",
                           "http://[2001:0:4136:e378:8000:63bf:5601:56fe]/"):
                body = assert_problem(http.post("/v1/webhooks", json={"url": target},
                                                headers=bearer(stack, ORG, "admin")), 400)
                assert body["reason"] == "WEBHOOK_URL_NOT_ALLOWED", (target, body)
    finally:
        stack.stop_service("gateway-ssrf")


def test_one_orgs_hanging_endpoints_do_not_hold_every_delivery_worker(stack, gateway,
                                                                        receiver):
    """The only gateway: two delivery workers, a 10 s deadline. An org whose
    two endpoints hang gets one worker, so another org's delivery goes out
    at once instead of after the hanging ones. (The endpoints earlier tests
    left are removed first: their retries would be a third org at work.)"""
    with httpx.Client(base_url=gateway[0], timeout=30) as http:
        admin = bearer(stack, ORG, "admin")
        for hook in http.get("/v1/webhooks", headers=admin).json()["webhooks"]:
            http.delete(f"/v1/webhooks/{hook['id']}", headers=admin)
    stack.stop_service("gateway")
    url = stack.start_gateway(name="gateway-fair", env={
        "PLANZOOM_WEBHOOK_WORKERS": "2", "PLANZOOM_WEBHOOK_TIMEOUT_SECONDS": "10",
        "PLANZOOM_WEBHOOK_MAX_ATTEMPTS": "1"})
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            for n in range(2):
                register(http, stack, receiver.url(f"/hang-{n}"), org="hooks-slow")
            register(http, stack, receiver.url("/prompt"), org="hooks-prompt")
            slow_job = _job_of(stack, "hooks-slow")
            assert slow_job.state == jobs_pb2.JOB_STATE_COMPLETE
            with _told_why(stack, slow_job):
                wait_until("both hanging deliveries under way",
                           lambda: len(receiver.at("/hang-0")) + len(receiver.at("/hang-1")) >= 1,
                           timeout=120)
            job = _job_of(stack, "hooks-prompt")
            with _told_why(stack, job):
                [request] = wait_until("the other org's delivery",
                                       lambda: receiver.at("/prompt"), timeout=30)
            ended_at = job.finished_at.seconds + job.finished_at.nanos / 1e9
            assert request["at"] - ended_at < 5, "it waited for the hanging endpoints"
    finally:
        stack.stop_service("gateway-fair")
        stack.start_gateway(env=gateway[1])


@contextlib.contextmanager
def _told_why(stack, job: jobs_pb2.Job):
    """A wait that times out says what the gateway and progress logged of
    ``job``'s event and of deliveries."""
    try:
        yield
    except AssertionError as e:
        said = []
        for path in sorted(stack.log_dir.glob("progress*.log")) + [
                stack.log_dir / "gateway-fair.log"]:
            gateway = path.stem.startswith("gateway")
            said += [f"{path.stem}: {ln}" for ln in path.read_text(errors="replace").splitlines()
                     if job.job_id in ln or (gateway and (
                         "webhook" in ln.lower() or "deliver" in ln or "Error" in ln
                         or "failed" in ln))][-40:]
        raise AssertionError(f"{e}; the logs said:\n" + "\n".join(said)) from e


def _job_of(stack, org: str) -> jobs_pb2.Job:
    """A small job of ``org``, ended."""
    client = client_for(stack, org=org)
    try:
        return wait_ended(client, client.submit(str(CORPUS / SMALL), jobs_pb2.PlanRef(
            org=org, project="hooks", plan="fair"), jobs_pb2.JobOptions(dpi=20)).job_id)
    finally:
        client.close()
