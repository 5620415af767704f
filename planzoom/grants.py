"""Work grants: a stage reports only on jobs it was given work of.

NATS permissions already hold each service to its own subjects: render
publishes only ``progress.render.<job>``, tile only ``progress.tile.<job>``.
They cannot tell which jobs: a compromised render service could report on
any job it can name. So the page jobs that ingest (and progress, when it
publishes them again) hand out carry a grant per job and stage, an
HMAC-SHA256 under ``PLANZOOM_WORK_GRANT_KEY`` (which only ingest and
progress hold) of the stage's name and the job id; the stage puts it in
every ProgressEvent, and the progress service refuses an event whose grant
does not match (FORGED_EVENT). Render passes tile's grant on in the
TileJob. A grant covers a job, not one page: a preview pass reports on a
run of pages at once.
"""

from __future__ import annotations

import hashlib
import hmac

#: Stages that report progress, each with grants of its own.
STAGES = ("render", "tile", "transcode")


class WorkGrants:
    """Mints and checks grants under ``key`` (bytes or text)."""

    def __init__(self, key: str | bytes):
        self._key = key.encode() if isinstance(key, str) else key
        if len(self._key) < 16:
            raise ValueError("PLANZOOM_WORK_GRANT_KEY must be at least 16 bytes")

    def mint(self, stage: str, job_id: str) -> str:
        """The grant (64 hex digits) for ``stage``'s work on ``job_id``."""
        if stage not in STAGES:
            raise ValueError(f"no stage {stage!r}")
        return hmac.new(self._key, f"{stage}\0{job_id}".encode(), hashlib.sha256).hexdigest()

    def check(self, stage: str, job_id: str, grant: str) -> bool:
        """True if ``grant`` is ``stage``'s for ``job_id`` (constant time)."""
        return stage in STAGES and hmac.compare_digest(self.mint(stage, job_id).encode(),
                                                       grant.encode())
