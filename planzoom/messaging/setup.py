"""``python -m planzoom.messaging.setup``: create or update the streams,
durable consumers and KV bucket (see :mod:`planzoom.messaging.topology`)
once, as the ``planzoom-setup`` NATS user, so that the services can run with
users that may not create them (``PLANZOOM_NATS_SETUP=false``). Idempotent;
settings from the environment as for any service."""

from __future__ import annotations

import asyncio

from planzoom.config import get_settings
from planzoom.logs import setup_logging
from planzoom.messaging import connection, topology


async def setup() -> None:
    settings = get_settings()
    nc = await connection.connect(settings, "setup")
    try:
        await topology.ensure_jetstream(nc.jetstream(), settings)
    finally:
        await connection.close(nc)


if __name__ == "__main__":
    setup_logging("setup", get_settings().log_level)
    asyncio.run(setup())
