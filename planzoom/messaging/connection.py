"""Connecting to NATS and draining the connection at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client as NATS

from planzoom.config import Settings
from planzoom.messaging.permissions import inbox_prefix

log = logging.getLogger(__name__)


async def connect(settings: Settings, name: str) -> NATS:
    """Connect as ``planzoom-<name>`` to one of the servers of
    ``PLANZOOM_NATS_URL``, with unlimited reconnects (a restarted server, or
    another of the cluster, is picked up), the credentials of the settings
    (a creds file, or a user and password) and the service's own reply
    inbox prefix (see :mod:`planzoom.messaging.permissions`)."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error: %s", e)

    return await nats.connect(
        settings.nats_servers,
        user_credentials=settings.nats_creds_file,
        user=settings.nats_user,
        password=settings.nats_password,
        inbox_prefix=inbox_prefix(name),
        name=f"planzoom-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
    )


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Drain the connection (flush publishes, end subscriptions), closing it
    outright if that takes longer than ``timeout`` seconds."""
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except Exception as e:
        log.warning("nats drain did not finish (%s); closing", e or type(e).__name__)
        with contextlib.suppress(Exception):
            await nc.close()
