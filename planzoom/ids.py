"""Identifiers that become parts of S3 keys and NATS KV keys.

Org, project and plan ids must match ``ID_PATTERN``: 1-64 characters, ASCII
letters, digits, ``_`` and ``-``, starting with a letter or digit. That
excludes ``/``, ``..``, ``.``, whitespace and control characters, so an id
can never change the shape of a key. Job ids are generated here and checked
with the same rule.
"""

from __future__ import annotations

import re
import secrets
import time

from planzoom.errors import InvalidInput

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class InvalidId(InvalidInput):
    """An id does not match ``ID_PATTERN``; ``field`` names which one (the
    request field, e.g. ``plan.org``)."""

    reason = "INVALID_ID"

    def __init__(self, field: str, value: str):
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(
            f"{field} {shown!r} is not a valid id: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit (no '/', '.', spaces or control characters)",
            field=field,
        )
        self.value = value


def check_id(field: str, value: str) -> str:
    """Return ``value`` if it is a valid id, else raise ``InvalidId``."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidId(field, value if isinstance(value, str) else repr(value))
    return value


def check_plan(plan) -> None:
    """Raise InvalidId (a BadRequest on ``plan.<id>``) unless the PlanRef's
    org, project and plan are valid ids."""
    for name in ("org", "project", "plan"):
        check_id(f"plan.{name}", getattr(plan, name))


def new_job_id() -> str:
    """A new job id: 12 hex digits of milliseconds since the epoch, then 10
    random hex digits, so ids sort by creation time (22 characters)."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"
