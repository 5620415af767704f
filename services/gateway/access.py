"""Who is calling the gateway, and how often.

A request carries either ``Authorization: Bearer <JWT>`` (verified here with
:class:`planzoom.auth.TokenVerifier`, the same issuer keys the gRPC services
use, and forwarded to them, which check it again) or, on tile, descriptor
and download routes, ``?cap=<signed link>``: a capability the gateway minted
for one job (``GET /v1/jobs/{id}/links``) for clients that cannot send
headers (an ``<img>``, a download link). Links are signed with
``PLANZOOM_GATEWAY_SIGNING_KEY`` (itsdangerous, HMAC-SHA256 over a JSON
payload with a timestamp) and expire after ``PLANZOOM_GATEWAY_LINK_SECONDS``.

Each caller (org and subject; an unauthenticated client by address) may make
``PLANZOOM_GATEWAY_RATE_PER_SECOND`` requests a second (``limits``, a moving
window in this process); beyond that: 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import itsdangerous
from fastapi import Request
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from planzoom import keys
from planzoom.auth import ROLES, Caller, TokenVerifier
from planzoom.config import Settings
from planzoom.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from planzoom.jobstore import JobNotFound
from planzoom.v1 import jobs_pb2

log = logging.getLogger(__name__)

#: Signed links kept once verified (the oldest dropped first).
VERIFIED_LINKS = 10_000


@dataclass(frozen=True)
class Link:
    """What a signed link grants: reading one job's outputs."""

    job_id: str
    org: str
    tiles_prefix: str
    subject: str
    archive: bool = False  # layout ARCHIVE: each page's pyramid in one object
    #: Unix seconds: ``PLANZOOM_GATEWAY_LINK_SECONDS`` after signing, or
    #: when the token that asked for it ends, whichever is sooner.
    expires_at: float = 0.0


@dataclass(frozen=True)
class Access:
    """A request's verified identity: a bearer token's caller (and the
    header, to forward upstream), or a signed link."""

    caller: Caller
    authorization: str | None = None
    link: Link | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata that carries the caller's token upstream."""
        if self.authorization is None:
            raise Unauthenticated("this route needs 'Authorization: Bearer <token>'; a signed "
                                  "link is not enough")
        return (("authorization", self.authorization),)


def _expired() -> Unauthenticated:
    return Unauthenticated("this link has expired; ask for a new one "
                           "(GET /v1/jobs/{job_id}/links)", reason="LINK_EXPIRED")


class Gatekeeper:
    """Verifies tokens and signed links and applies the per-caller rate."""

    def __init__(self, settings: Settings, verifier: TokenVerifier | None = None):
        self.verifier = verifier or TokenVerifier(settings)
        key = settings.gateway_signing_key
        if not key:
            key = secrets.token_urlsafe(32)
            log.warning("PLANZOOM_GATEWAY_SIGNING_KEY is not set: signed links work only on "
                        "this gateway process and end with it")
        self._key = key
        self.links = self.serializer("planzoom-link")
        self.link_seconds = settings.gateway_link_seconds
        self.rate = RateLimitItemPerSecond(settings.gateway_rate_per_second)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self._verified: OrderedDict[str, Link] = OrderedDict()

    def serializer(self, salt: str) -> itsdangerous.URLSafeTimedSerializer:
        """Signs and checks timestamped payloads of one kind (``salt``) with
        the gateway's key: a payload signed for one kind never verifies as
        another."""
        return itsdangerous.URLSafeTimedSerializer(
            self._key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256})

    def sign(self, link: Link, token_expires_at: float = 0.0) -> tuple[str, float]:
        """A signed link and its expiry (Unix seconds): ``link_seconds`` from
        now, never later than ``token_expires_at`` (the ``exp`` of the token
        that asked for it, 0: none), so a link never outlives its grant."""
        expires = time.time() + self.link_seconds
        if token_expires_at:
            expires = min(expires, token_expires_at)
        token = self.links.dumps({"j": link.job_id, "o": link.org, "p": link.tiles_prefix,
                                  "s": link.subject, "a": link.archive, "e": int(expires)})
        return token, float(int(expires))

    def job_link(self, job: jobs_pb2.Job, caller: Caller) -> tuple[str, float]:
        """A signed link to read ``job``'s outputs, minted for ``caller`` (it
        ends when the caller's token does), and its expiry (:meth:`sign`)."""
        return self.sign(Link(job.job_id, job.plan.org, job.tiles_prefix, caller.subject,
                              keys.is_archive(job.options)), token_expires_at=caller.expires_at)

    def _link(self, cap: str) -> Link:
        # A viewer sends its link with every tile: verify it once, then
        # only check its expiry.
        kept = self._verified.get(cap)
        if kept is None:
            try:
                data = self.links.loads(cap, max_age=self.link_seconds)
            except itsdangerous.SignatureExpired:
                raise _expired() from None
            except itsdangerous.BadData:
                raise Unauthenticated("this link is not valid", reason="BAD_LINK") from None
            kept = Link(job_id=data["j"], org=data["o"], tiles_prefix=data["p"],
                        subject=data["s"], archive=bool(data.get("a")),
                        expires_at=float(data.get("e", 0)))
            self._verified[cap] = kept
            if len(self._verified) > VERIFIED_LINKS:
                self._verified.popitem(last=False)
        if time.time() > kept.expires_at:
            raise _expired()
        return kept

    def throttle(self, key: str) -> None:
        """ResourceExhausted (429) once ``key`` is over the per-caller rate."""
        if not self.limiter.hit(self.rate, key):
            raise ResourceExhausted(
                f"more than {self.rate.amount} requests a second from this caller; slow down",
                reason="RATE_LIMITED", retry_after=1.0)

    def check(self, request: Request, role: str, allow_link: bool = False,
              job_id: str | None = None, cap: str | None = None) -> Access:
        """The request's :class:`Access`, if it may act with ``role``.

        A signed link counts where ``allow_link`` is set, as a viewer of its
        own job (``job_id``) only: another job is 404, as if it did not
        exist. The link is ``cap`` where the route has it in its path (IIIF
        clients build URLs by appending to a service id and send no
        headers), else ``?cap=``. Raises Unauthenticated (401),
        PermissionDenied (403), NotFound (404) or ResourceExhausted (429)."""
        header = request.headers.get("authorization")
        if allow_link and cap is None:
            cap = request.query_params.get("cap")
        elif not allow_link:
            cap = None
        anonymous = f"anonymous:{request.client.host if request.client else 'unknown'}"
        if header is None and cap is None:
            self.throttle(anonymous)
            raise Unauthenticated("send 'Authorization: Bearer <token>'" +
                                  (" or a signed link (?cap=)" if allow_link else ""))
        try:
            if header is not None:
                access = Access(caller=self.verifier.verify(header), authorization=header)
            else:
                link = self._link(cap)
                access = Access(Caller(subject=link.subject, org=link.org, role=ROLES[0]),
                                link=link)
        except Unauthenticated:
            self.throttle(anonymous)  # forged credentials cost their sender, not the rest
            raise
        if access.link is not None and job_id is not None and access.link.job_id != job_id:
            raise JobNotFound(job_id)
        self.throttle(f"{access.caller.org}:{access.caller.subject}")
        if not access.caller.may(role):
            raise PermissionDenied(f"{access.caller.subject} is a {access.caller.role}; this "
                                   f"needs the {role} role")
        return access
