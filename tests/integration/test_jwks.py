"""Tokens checked against an issuer's key set at an https URL (a local
server with a throwaway CA): the set is fetched off the request path, so a
slow or rotating issuer never holds up a token check."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from planzoom.auth import RemoteKeys, TokenVerifier
from planzoom.config import Settings
from planzoom.errors import Unauthenticated
from tests.helpers import wait_until

ISSUER, AUDIENCE = "https://id.example.test/", "planzoom"


class KeyServer:
    """Serves ``/jwks.json`` over https from ``keys`` (kid → RSA key), each
    answer ``delay`` seconds late; counts the requests."""

    def __init__(self, ca: trustme.CA):
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.delay, self.requests = 0.0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests += 1
                time.sleep(server.delay)
                body = json.dumps({"keys": [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())),
                     "kid": kid, "use": "sig", "alg": "RS256"}
                    for kid, k in list(server.keys.items())]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.httpd.server_port}/jwks.json"

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def token(self, kid: str) -> str:
        now = int(time.time())
        return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@acme", "org": "acme",
                           "roles": ["viewer"], "iat": now, "exp": now + 600},
                          self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def ca_file(tmp_path):
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return ca, str(path)


def test_keys_are_fetched_off_the_request_path_and_follow_a_rotation(ca_file):
    ca, path = ca_file
    server = KeyServer(ca)
    try:
        first = server.add_key()
        verifier = TokenVerifier(Settings(auth_jwks=server.url, tls_ca_file=path,
                                          auth_issuer=ISSUER, auth_audience=AUDIENCE,
                                          auth_jwks_cooldown_seconds=2))
        assert verifier.verify(f"Bearer {server.token(first)}").subject == "alice@acme"
        fetched = server.requests

        # The issuer rotates; its server is slow now. A token of the new key
        # is refused at once, not after the fetch, and has the set fetched
        # again; meanwhile the old key's tokens are checked without waiting.
        second = server.add_key()
        server.delay = 3.0
        started = time.monotonic()
        with pytest.raises(Unauthenticated, match="rotated"):
            verifier.verify(f"Bearer {server.token(second)}")
        assert verifier.verify(f"Bearer {server.token(first)}").org == "acme"
        assert time.monotonic() - started < 1.5, "a token check waited for the key server"
        wait_until("the new key is fetched",
                   lambda: _accepted(verifier, server.token(second)), timeout=30)
        assert server.requests == fetched + 1
        # A burst of unknown keys costs the issuer one fetch per cooldown, not one each.
        stranger = jwt.encode({"sub": "x"}, server.keys[first], algorithm="RS256",
                              headers={"kid": "unknown"})
        for _ in range(20):
            with pytest.raises(Unauthenticated):
                verifier.verify(f"Bearer {stranger}")
        time.sleep(1)  # within the cooldown of the last fetch
        assert server.requests <= fetched + 2
    finally:
        server.httpd.shutdown()


def test_a_key_server_that_is_not_trusted_is_not_used(ca_file, tmp_path):
    ca, _ = ca_file
    server = KeyServer(ca)
    other = trustme.CA()
    other.cert_pem.write_to_path(tmp_path / "other.pem")
    try:
        kid = server.add_key()
        keys = RemoteKeys(server.url, str(tmp_path / "other.pem"), cooldown=0.1)
        with pytest.raises(jwt.InvalidTokenError):
            keys.key(kid)
    finally:
        server.httpd.shutdown()


def _accepted(verifier: TokenVerifier, token: str) -> bool:
    try:
        verifier.verify(f"Bearer {token}")
        return True
    except Unauthenticated:
        return False
