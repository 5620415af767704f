"""Each service's NATS identity: one user per service, allowed only the
subjects it needs, and ``planzoom-setup``, which creates the streams,
consumers and KV bucket before the services start.

- Only ingest and progress write job records (``$KV.planzoom_jobs.>``);
  render and tile may read them, never write.
- Only ingest and progress publish page jobs (``pages.render.>``) and
  video jobs (``videos.transcode.>``); only render publishes tile jobs
  (``pages.tile.>``), and progress the overlays of revised sheets there (the
  tile stage makes one only if the job record names that version).
- render may publish only ``progress.render.>``, tile only
  ``progress.tile.>``, transcode only ``progress.transcode.>``: the
  progress service trusts the stage in the subject (see services/progress/records.py).
- Only progress publishes job-ended events (``jobs.ended.>``); only the
  gateway reads them, writes its own KV bucket (``planzoom_gateway``:
  uploads, webhook endpoints) and publishes webhook deliveries.
- Each user receives replies only on its own inbox prefix
  (``_INBOX_<service>.>``), so no service can read another's replies.

:func:`users_conf` renders this as a nats-server ``authorization`` block
whose passwords are the server's environment variables
``PLANZOOM_NATS_PASSWORD_<USER>`` (nats-server expands ``$VAR`` in its
config, parsing the value as a config token: a password must start with a
letter, or one like ``3f…`` is read as a number and the server will not
start). The embedded stack runs nats-server with it; the Helm chart's
README gives the same block for the NATS chart.
"""

from __future__ import annotations

from planzoom.messaging.topology import (
    ADVISORY_CONSUMER,
    ADVISORY_STREAM,
    DEAD_LETTER_STREAM,
    GATEWAY_BUCKET,
    JOB_EVENTS_CONSUMER,
    JOB_EVENTS_STREAM,
    JOBS_BUCKET,
    PROGRESS_CONSUMER,
    PROGRESS_STREAM,
    RENDER_STREAM,
    TILE_STREAM,
    TRANSCODE_STREAM,
    WEBHOOKS_STREAM,
)

API = "$JS.API"
KV_STREAM = f"KV_{JOBS_BUCKET}"
GATEWAY_KV_STREAM = f"KV_{GATEWAY_BUCKET}"
SETUP_USER = "planzoom-setup"


def inbox_prefix(service: str) -> str:
    """The reply inbox prefix of a service's NATS connection."""
    return f"_INBOX_{service}"


def _kv_read(stream: str = KV_STREAM) -> list[str]:
    return [f"{API}.STREAM.INFO.{stream}", f"{API}.DIRECT.GET.{stream}.>",
            f"{API}.DIRECT.GET.{stream}", f"{API}.STREAM.MSG.GET.{stream}"]


def _kv_write(bucket: str = JOBS_BUCKET) -> list[str]:
    return [f"$KV.{bucket}.>"]


def _kv_watch(stream: str) -> list[str]:
    """Watching keys (an ordered consumer on the bucket's stream)."""
    return [f"{API}.CONSUMER.CREATE.{stream}.>", f"{API}.CONSUMER.CREATE.{stream}",
            f"{API}.CONSUMER.INFO.{stream}.*", f"{API}.CONSUMER.DELETE.{stream}.>", "$JS.FC.>"]


def _consume(stream: str, consumers: str) -> list[str]:
    """Pull from ``consumers`` (a name or wildcard) of ``stream`` and end_if_pages_ended."""
    return [f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumers}",
            f"{API}.CONSUMER.INFO.{stream}.{consumers}",
            f"$JS.ACK.{stream}.{consumers}.>"]


def _create_org_consumers(stream: str) -> list[str]:
    return [f"{API}.CONSUMER.CREATE.{stream}.>", f"{API}.CONSUMER.DURABLE.CREATE.{stream}.*",
            f"{API}.CONSUMER.INFO.{stream}.*"]


#: Publish allow-lists, by service.
PUBLISH: dict[str, list[str]] = {
    "ingest": [
        "pages.render.>", "videos.transcode.>", *_kv_read(), *_kv_write(),
        *_create_org_consumers(RENDER_STREAM), *_create_org_consumers(TILE_STREAM),
        *_create_org_consumers(TRANSCODE_STREAM),
    ],
    "render": [
        "pages.tile.>", "progress.render.>", "deadletter.render.>", *_kv_read(),
        *_consume(RENDER_STREAM, "*"), f"{API}.CONSUMER.LIST.{RENDER_STREAM}",
        *_create_org_consumers(TILE_STREAM),
    ],
    "tile": [
        "progress.tile.>", "deadletter.tile.>", *_kv_read(),
        *_consume(TILE_STREAM, "*"), f"{API}.CONSUMER.LIST.{TILE_STREAM}",
    ],
    "progress": [
        "pages.render.>", "pages.tile.>", "videos.transcode.>", "deadletter.>", "jobs.ended.>",
        *_kv_read(), *_kv_write(),
        *_kv_watch(KV_STREAM),  # watching job records
        *_consume(PROGRESS_STREAM, PROGRESS_CONSUMER), *_consume(ADVISORY_STREAM,
                                                                 ADVISORY_CONSUMER),
        *_create_org_consumers(RENDER_STREAM), *_create_org_consumers(TILE_STREAM),
        *_create_org_consumers(TRANSCODE_STREAM),
        *(f"{API}.CONSUMER.LIST.{s}" for s in (RENDER_STREAM, TILE_STREAM, TRANSCODE_STREAM)),
        # MAX_DELIVERIES advisories: the page job they name
        *(f"{API}.STREAM.MSG.{op}.{s}" for op in ("GET", "DELETE")
          for s in (RENDER_STREAM, TILE_STREAM, TRANSCODE_STREAM)),
        # the sweep: job ids, dead letters
        f"{API}.STREAM.INFO.{DEAD_LETTER_STREAM}",
        f"{API}.CONSUMER.CREATE.{DEAD_LETTER_STREAM}",
        f"{API}.CONSUMER.CREATE.{DEAD_LETTER_STREAM}.>",
        f"{API}.CONSUMER.DELETE.{DEAD_LETTER_STREAM}.>",
        *_consume(DEAD_LETTER_STREAM, "*"),
    ],
    "transcode": [
        "progress.transcode.>", "deadletter.transcode.>", *_kv_read(),
        *_consume(TRANSCODE_STREAM, "*"), f"{API}.CONSUMER.LIST.{TRANSCODE_STREAM}",
    ],
    "gateway": [
        "webhooks.deliver.>", *_kv_read(GATEWAY_KV_STREAM), *_kv_write(GATEWAY_BUCKET),
        *_kv_watch(GATEWAY_KV_STREAM),
        *_consume(JOB_EVENTS_STREAM, JOB_EVENTS_CONSUMER),
        *_create_org_consumers(WEBHOOKS_STREAM), *_consume(WEBHOOKS_STREAM, "*"),
        f"{API}.CONSUMER.LIST.{WEBHOOKS_STREAM}",
    ],
}

#: Subscribe allow-lists beyond each service's own inbox: the work subjects
#: a worker listens to, to be woken when work arrives.
SUBSCRIBE: dict[str, list[str]] = {
    "ingest": [], "render": ["pages.render.>"], "tile": ["pages.tile.>"], "progress": [],
    "transcode": ["videos.transcode.>"], "gateway": ["webhooks.deliver.>"],
}


def user_name(service: str) -> str:
    return f"planzoom-{service}"


def password_variable(user: str) -> str:
    """The nats-server environment variable holding ``user``'s password."""
    return "PLANZOOM_NATS_PASSWORD_" + user.removeprefix("planzoom-").upper()


def users_conf() -> str:
    """The nats-server ``authorization`` block for planzoom's users."""

    def quoted(subjects: list[str]) -> str:
        return "[" + ", ".join(f'"{s}"' for s in subjects) + "]"

    entries = [f'    {{user: "{SETUP_USER}", password: ${password_variable(SETUP_USER)}}}']
    for service, publish in PUBLISH.items():
        subscribe = [f"{inbox_prefix(service)}.>", *SUBSCRIBE[service]]
        entries.append(
            f'    {{user: "{user_name(service)}", '
            f"password: ${password_variable(user_name(service))},\n"
            f"     permissions: {{publish: {{allow: {quoted(publish)}}},\n"
            f"                   subscribe: {{allow: {quoted(subscribe)}}}}}}}")
    return ("# planzoom's NATS users (planzoom/messaging/permissions.py). Passwords come\n"
            "# from the server's environment: " + ", ".join(
                "$" + password_variable(u) for u in
                [SETUP_USER, *(user_name(s) for s in PUBLISH)]) + ".\n"
            "authorization {\n  users = [\n" + ",\n".join(entries) + "\n  ]\n}\n")
