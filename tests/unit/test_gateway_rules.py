"""The gateway's rules that need no stack: tus metadata, webhook URL and
address checks, the delivery backoff, the payload."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json

import pytest

from planzoom.config import Settings
from planzoom.errors import InvalidInput
from planzoom.v1 import events_pb2, jobs_pb2
from planzoom.v1.reasons_pb2 import Reason
from services.gateway.endpoints import Unsafe, check_url, resolve_allowed
from services.gateway.tus import job_request, parse_metadata
from services.gateway.webhooks import _backoff, payload


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_tus_metadata_is_pairs_of_key_and_base64():
    meta = parse_metadata(f"project {b64('tower')},plan {b64('A-101')}, filename {b64('é.pdf')},"
                          "empty")
    assert meta == {"project": "tower", "plan": "A-101", "filename": "é.pdf", "empty": ""}
    for bad in (f"plan {b64('a')},plan {b64('b')}", "plan !!!", f"plan {b64('a')} extra",
                "plan " + base64.b64encode(b"\xff\xfe").decode()):
        with pytest.raises(InvalidInput):
            parse_metadata(bad)


def test_tus_metadata_names_a_plan_and_options():
    plan, options, name = job_request({"project": "p", "plan": "l", "dpi": "150.5",
                                       "overlap": "0"}, "acme")
    assert plan == jobs_pb2.PlanRef(org="acme", project="p", plan="l") and name == ""
    assert options.dpi == 150.5 and options.HasField("overlap") and options.overlap == 0
    for bad in ({"plan": "l"}, {"project": "p", "plan": "l", "dpi": "x"},
                {"project": "p", "plan": "l", "colour": "red"}):
        with pytest.raises(InvalidInput):
            job_request(bad, "acme")


def test_webhook_urls():
    assert check_url("https://hooks.example.com/a?b=1") == ("https", "hooks.example.com", 443)
    assert check_url("http://10.0.0.1:8080/") == ("http", "10.0.0.1", 8080)
    for bad in ("ftp://x/", "https://u:p@x/", "https://x/#f", "https://x:99999/", "/relative",
                "https://" + "a" * 2000 + ".com/", "http://[::1", "http://[::1]x/",
                "https://" + "a" * 64 + ".example.com/", "https://x..example.com/"):
        with pytest.raises(InvalidInput):
            check_url(bad)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.2.3.4", "172.16.0.1", "192.168.1.1",
                                  "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                  "fe80::1", "fc00::1", "::ffff:10.0.0.1", "224.0.0.1",
                                  "240.0.0.1",
                                  # IPv4 inside IPv6: 6to4, Teredo and NAT64 of
                                  # 169.254.169.254 and 10.0.0.1, documentation space
                                  "2002:a9fe:a9fe::1", "2002:a00:1::",
                                  "2001:0:4136:e378:8000:63bf:5601:56fe",
                                  "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1", "2001:db8::1"])
def test_non_public_addresses_are_refused(host):
    with pytest.raises(Unsafe):
        asyncio.run(resolve_allowed(host, 443, allow_private=False))
    allowed = asyncio.run(resolve_allowed(host, 443, allow_private=True))
    assert ipaddress.ip_address(allowed) == ipaddress.ip_address(host)


def test_public_addresses_pass():
    for host in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert asyncio.run(resolve_allowed(host, 443, allow_private=False)) == host


def test_backoff_doubles_up_to_its_cap():
    delay = _backoff(Settings(webhook_retry_seconds=5, webhook_retry_max_seconds=60))
    assert [delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_payload_is_the_documented_json():
    ended = events_pb2.JobEnded(job_id="j1", plan=jobs_pb2.PlanRef(org="o", project="p",
                                                                    plan="l"),
                                state=jobs_pb2.JOB_STATE_FAILED, total_pages=3,
                                completed_pages=2, failed_pages=1, error="page 3: broken",
                                reason=Reason.REASON_PAGES_FAILED)
    ended.finished_at.FromSeconds(1_800_000_000)
    body = json.loads(payload(ended, "job.failed"))
    assert body["type"] == "job.failed" and body["timestamp"] == "2027-01-15T08:00:00Z"
    assert body["data"] == {"job_id": "j1", "plan": {"org": "o", "project": "p", "plan": "l"},
                            "state": "JOB_STATE_FAILED", "total_pages": 3,
                            "completed_pages": 2, "failed_pages": 1, "error": "page 3: broken",
                            "reason": "PAGES_FAILED", "finished_at": "2027-01-15T08:00:00Z",
                            "sheets": {"new": [], "revised": [], "unchanged": []}}


def test_a_completed_sets_payload_lists_its_new_revised_and_unchanged_sheets():
    ended = events_pb2.JobEnded(job_id="j2", state=jobs_pb2.JOB_STATE_COMPLETE, sheet_changes=[
        events_pb2.SheetChange(page=1, number="A-101", change="revised"),
        events_pb2.SheetChange(page=2, number="A-102", change="unchanged"),
        events_pb2.SheetChange(page=3, number="", change="new"),
        events_pb2.SheetChange(page=4, number="A-104", change="new")])
    body = json.loads(payload(ended, "job.completed"))
    assert body["data"]["sheets"] == {
        "new": [{"page": 3, "number": None}, {"page": 4, "number": "A-104"}],
        "revised": [{"page": 1, "number": "A-101"}],
        "unchanged": [{"page": 2, "number": "A-102"}]}


def _cap_request(cap: str):
    from starlette.requests import Request

    return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                    "query_string": f"cap={cap}".encode(), "client": ("192.0.2.1", 1)})


def test_a_signed_link_is_verified_once_and_still_expires(monkeypatch):
    import time

    from planzoom.errors import NotFound, Unauthenticated
    from services.gateway.access import Gatekeeper, Link

    gate = Gatekeeper(Settings(gateway_signing_key="k" * 32, gateway_link_seconds=60),
                      verifier=object())
    cap, _ = gate.sign(Link("j1", "acme", "tiles/acme/p/l/j1/", "dev:acme:viewer", True))
    access = gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j1")
    assert access.link.archive and access.caller.org == "acme"
    assert gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j1") == access
    with pytest.raises(NotFound):  # a link opens its own job only
        gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j2")
    # One character changed: not the last, whose low bits base64 drops (a
    # changed last character can decode to the same signature).
    i = len(cap) - 5
    with pytest.raises(Unauthenticated):
        gate.check(_cap_request(cap[:i] + ("A" if cap[i] != "A" else "B") + cap[i + 1:]),
                   "viewer", allow_link=True, job_id="j1")
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthenticated, match="expired"):
        gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j1")


def test_signed_links_are_hmac_sha256_as_documented():
    import base64
    import hashlib
    import hmac

    import itsdangerous

    from planzoom.errors import Unauthenticated
    from services.gateway.access import Gatekeeper, Link

    key = "k" * 32
    gate = Gatekeeper(Settings(gateway_signing_key=key), verifier=object())
    cap, _ = gate.sign(Link("j1", "acme", "tiles/acme/p/l/j1/", "dev:acme:viewer"))
    signed, _, signature = cap.rpartition(".")
    # itsdangerous derives the HMAC key from the secret and the salt ("django-concat").
    derived = hashlib.sha256(b"planzoom-link" + b"signer" + key.encode()).digest()
    expected = hmac.new(derived, signed.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    # The same payload signed with itsdangerous' default (SHA-1) is not a link.
    sha1 = itsdangerous.URLSafeTimedSerializer(key, salt="planzoom-link").dumps(
        {"j": "j1", "o": "acme", "p": "tiles/acme/p/l/j1/", "s": "dev:acme:viewer", "a": False})
    with pytest.raises(Unauthenticated):
        gate.check(_cap_request(sha1), "viewer", allow_link=True, job_id="j1")


def test_a_link_never_outlives_the_token_that_asked_for_it(monkeypatch):
    import time

    from planzoom.errors import Unauthenticated
    from services.gateway.access import Gatekeeper, Link

    gate = Gatekeeper(Settings(gateway_signing_key="k" * 32, gateway_link_seconds=3600),
                      verifier=object())
    now = time.time()
    cap, expires = gate.sign(Link("j1", "acme", "tiles/acme/p/l/j1/", "dev:acme:viewer"),
                             token_expires_at=now + 60)
    assert expires <= now + 60
    assert gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j1").link
    later = now + 120  # the token has ended; the link's own hour has not
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthenticated, match="expired"):
        gate.check(_cap_request(cap), "viewer", allow_link=True, job_id="j1")


def test_keys_over_plain_http_are_refused():
    from planzoom.auth import TokenVerifier

    with pytest.raises(ValueError, match="https"):
        TokenVerifier(Settings(auth_jwks="http://id.example.com/jwks.json"))
