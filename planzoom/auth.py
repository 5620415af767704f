"""Who is calling, and what they may do.

Every RPC but health carries ``authorization: Bearer <JWT>`` in its call
metadata. :class:`TokenVerifier` checks the token against the issuer's
public keys (a PEM file, or a JWKS file or URL) with one pinned algorithm,
and requires ``exp``, ``iss``, ``aud`` and ``sub`` (RFC 7519; PyJWT). The
claims ``org`` (an id, see :mod:`planzoom.ids`) and ``roles`` (a list) name
the caller's organisation and what it may do:

==========  ==========================================================
role        may
==========  ==========================================================
viewer      GetJob, WatchJob, ListJobs
uploader    a viewer's RPCs, Upload, CreateUploadUrl, SubmitJob
admin       an uploader's RPCs, CancelJob, Reconcile
==========  ==========================================================

:class:`planzoom.boundary.RpcBoundary` verifies the token once per RPC and
puts the :class:`Caller` in a context variable; handlers ask through
:func:`require_org` and :func:`visible` whether it may touch an org's plan
or a job. A plan of another org is PERMISSION_DENIED (the caller named the
org, so nothing leaks); a job of another org is NOT_FOUND, exactly as an
unknown job id, so job ids cannot be probed.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from planzoom.config import Settings
from planzoom.errors import NotFound, PermissionDenied, Unauthenticated
from planzoom.ids import ID_PATTERN

log = logging.getLogger(__name__)

#: Roles from least to most: each includes the ones before it.
ROLES = ("viewer", "uploader", "admin")
#: Clock skew allowed between the issuer and planzoom (seconds).
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Caller:
    """A verified caller: ``subject`` (the token's ``sub``), ``org``, and its
    highest role."""

    subject: str
    org: str
    role: str
    #: When the token ends (Unix seconds; its ``exp``), 0 if unknown.
    expires_at: float = 0.0

    def may(self, role: str) -> bool:
        """True if the caller's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("planzoom_caller")


def current() -> Caller:
    """The caller of the RPC being handled (set by the boundary)."""
    try:
        return _caller.get()
    except LookupError:
        raise Unauthenticated("no caller: this RPC was not authenticated") from None


def set_current(caller: Caller) -> contextvars.Token:
    return _caller.set(caller)


def require_org(org: str) -> Caller:
    """The caller, if it belongs to ``org``; else PermissionDenied."""
    caller = current()
    if caller.org != org:
        raise PermissionDenied(f"{caller.subject} (org {caller.org!r}) may not act on the "
                               f"plans of org {org!r}")
    return caller


def visible(job, not_found: type[NotFound]):
    """``job`` if the caller's org owns it, else ``not_found(job.job_id)``
    raised: a job of another org looks exactly like one that does not exist."""
    if current().org != job.plan.org:
        raise not_found(job.job_id)
    return job


class RemoteKeys:
    """An issuer's key set (JWKS) at an https URL, fetched by a thread of its
    own so that checking a token never waits on the network (the event loop
    of a service would stop for every caller meanwhile): once at start,
    every ``lifespan`` seconds, and when a token names a key the set does
    not hold (a rotation), at most once per ``cooldown`` seconds. The
    server's certificate is checked against ``ca_file`` (default: the
    system's CAs)."""

    def __init__(self, url: str, ca_file: str | None = None, lifespan: float = 300.0,
                 cooldown: float = 30.0, timeout: float = 10.0):
        import ssl
        import threading

        self.url, self.lifespan, self.cooldown = url, lifespan, cooldown
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout,
                                       ssl_context=ssl.create_default_context(cafile=ca_file))
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._wake = threading.Event()
        self._fetch()
        threading.Thread(target=self._run, name="jwks", daemon=True).start()

    def _fetch(self) -> None:
        try:
            keys = self._client.get_jwk_set(refresh=True).keys
            self._keys = {key.key_id: key for key in keys}  # one assignment: no torn reads
        except jwt.PyJWKClientError as e:
            log.warning("the issuer's key set could not be fetched from %s: %s", self.url, e)
        self._fetched = time.monotonic()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.lifespan)
            self._wake.clear()
            time.sleep(max(0.0, self._fetched + self.cooldown - time.monotonic()))
            self._fetch()

    def key(self, kid: str | None) -> jwt.PyJWK:
        """The key ``kid`` names (without ``kid``: the set's only key).
        Raises InvalidTokenError, and has the set fetched again, if the set
        does not hold it."""
        keys = self._keys
        found = keys.get(kid) if kid is not None else (
            next(iter(keys.values())) if len(keys) == 1 else None)
        if found is None:
            self._wake.set()
            raise jwt.InvalidTokenError(
                f"the issuer's key set has no key {kid!r}; if the issuer has just rotated its "
                f"keys, retry in {self.cooldown:g} seconds")
        return found


class TokenVerifier:
    """Verifies bearer tokens against the configured issuer keys.

    Settings: ``PLANZOOM_AUTH_PUBLIC_KEY_FILE`` (a PEM public key) or
    ``PLANZOOM_AUTH_JWKS`` (a JWKS document: a file path, or an https:// URL
    kept by :class:`RemoteKeys`, off the request path; plain http:// is
    refused, as anyone on the path could hand over keys of their own), with
    ``PLANZOOM_AUTH_ISSUER``, ``PLANZOOM_AUTH_AUDIENCE`` and
    ``PLANZOOM_AUTH_ALGORITHM`` (only that algorithm is accepted). A token
    valid for longer than ``PLANZOOM_AUTH_MAX_TOKEN_SECONDS`` (``exp`` minus
    ``iat``, or minus now without ``iat``) is refused: a leaked token must
    not open everything for years.
    """

    def __init__(self, settings: Settings):
        self.issuer, self.audience = settings.auth_issuer, settings.auth_audience
        self.algorithms = [settings.auth_algorithm]
        self.max_seconds = settings.auth_max_token_seconds
        self._key = None
        self._remote: RemoteKeys | None = None
        self._jwks: jwt.PyJWKSet | None = None
        if settings.auth_public_key_file:
            self._key = Path(settings.auth_public_key_file).read_bytes()
        elif settings.auth_jwks:
            source = settings.auth_jwks
            if source.startswith("http://"):
                raise ValueError("PLANZOOM_AUTH_JWKS must be an https:// URL or a file: keys "
                                 "fetched over plain http can be replaced on the way")
            if source.startswith("https://"):
                self._remote = RemoteKeys(source, settings.tls_ca_file,
                                          cooldown=settings.auth_jwks_cooldown_seconds)
            else:
                self._jwks = jwt.PyJWKSet.from_json(Path(source).read_text())
        else:
            raise ValueError("no token issuer is configured: set PLANZOOM_AUTH_PUBLIC_KEY_FILE "
                             "or PLANZOOM_AUTH_JWKS")

    def _signing_key(self, token: str):
        if self._key is not None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        if self._remote is not None:
            return self._remote.key(kid)
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key
        raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the issuer's key set")

    def verify(self, authorization: str | None) -> Caller:
        """The caller named by an ``authorization`` metadata value. Raises
        Unauthenticated with a message saying what is wrong."""
        if not authorization:
            raise Unauthenticated("this RPC needs 'authorization: Bearer <token>' metadata; "
                                  "ask your planzoom operator for a token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token.strip(), self._signing_key(token.strip()), algorithms=self.algorithms,
                audience=self.audience, issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]}, leeway=LEEWAY_SECONDS)
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one") from None
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"the token is not valid: {e}") from None
        issued = claims.get("iat")
        lifetime = claims["exp"] - (issued if isinstance(issued, int | float) else time.time())
        if lifetime > self.max_seconds + LEEWAY_SECONDS:
            raise Unauthenticated(
                f"the token is valid for {lifetime:.0f} s, longer than the "
                f"{self.max_seconds:.0f} s this deployment accepts "
                "(PLANZOOM_AUTH_MAX_TOKEN_SECONDS); ask for a shorter-lived one")
        org, roles = claims.get("org"), claims.get("roles")
        if not isinstance(org, str) or not ID_PATTERN.fullmatch(org):
            raise Unauthenticated("the token's 'org' claim is missing or not a valid org id")
        if isinstance(roles, str):
            roles = roles.split()
        known = [r for r in ROLES if isinstance(roles, list) and r in roles]
        if not known:
            raise Unauthenticated(f"the token names no role; one of {', '.join(ROLES)} is "
                                  "needed")
        return Caller(subject=str(claims["sub"])[:200], org=org, role=known[-1],
                      expires_at=float(claims["exp"]))

