"""A development token issuer: an RSA key pair that signs bearer tokens for
the embedded stack, so the CLI and tests work at once with real JWTs.

``planzoom up`` uses the issuer of the checkout it runs from (its key lives
in ``<checkout>/.planzoom/``, or under ``PLANZOOM_DEV_HOME``), so that
``planzoom token`` from the same checkout mints tokens the stack accepts.
Not for production: there, tokens come from your identity provider and the
services are given its public key or JWKS.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from planzoom.auth import ROLES

ISSUER = "planzoom-dev"
AUDIENCE = "planzoom"
ALGORITHM = "RS256"


def default_home() -> Path:
    """``PLANZOOM_DEV_HOME``, else ``.planzoom/`` beside the virtualenv of
    this checkout (``<checkout>/.venv`` → ``<checkout>/.planzoom``)."""
    return Path(os.environ.get("PLANZOOM_DEV_HOME") or Path(sys.prefix).parent / ".planzoom")


class DevIssuer:
    """The key pair in ``home`` (created, private key mode 0600, on first
    use) and the tokens it signs."""

    def __init__(self, home: Path | None = None):
        self.home = home or default_home()
        self.private_key_file = self.home / "dev-issuer-key.pem"
        self.public_key_file = self.home / "dev-issuer.pub.pem"
        if not self.private_key_file.exists():
            self._create()
        self._key = serialization.load_pem_private_key(self.private_key_file.read_bytes(), None)

    def _create(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = self.private_key_file.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        self.public_key_file.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        tmp.replace(self.private_key_file)

    def mint(self, org: str, role: str = "uploader", ttl: float = 3600.0,
             subject: str | None = None) -> str:
        """A token for ``org`` with ``role`` (viewer, uploader or admin),
        valid ``ttl`` seconds (negative: already expired, for tests)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject or f"dev:{org}:{role}",
                  "org": org, "roles": [role], "iat": now, "exp": now + int(ttl),
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def env(self) -> dict[str, str]:
        """Settings that make the services trust this issuer."""
        return {"PLANZOOM_AUTH_PUBLIC_KEY_FILE": str(self.public_key_file),
                "PLANZOOM_AUTH_ISSUER": ISSUER, "PLANZOOM_AUTH_AUDIENCE": AUDIENCE,
                "PLANZOOM_AUTH_ALGORITHM": ALGORITHM}
