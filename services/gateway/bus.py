"""The gateway's NATS side: its connection (user ``planzoom-gateway``) and
its KV bucket ``planzoom_gateway`` (tus uploads, webhook endpoints, webhook
dead letters; see :mod:`planzoom.messaging.topology`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from planzoom.config import Settings
from planzoom.messaging import connection, topology

M = TypeVar("M", bound=Message)


@dataclass
class Bus:
    nc: NATS
    js: JetStreamContext
    kv: KeyValue

    @classmethod
    async def open(cls, settings: Settings) -> Bus:
        """Connect as the gateway (setting up streams and buckets first if
        ``PLANZOOM_NATS_SETUP``)."""
        nc = await connection.connect(settings, "gateway")
        js = nc.jetstream()
        if settings.nats_setup:
            await topology.ensure_jetstream(js, settings)
        return cls(nc, js, await js.key_value(topology.GATEWAY_BUCKET))

    async def close(self) -> None:
        await connection.close(self.nc)

    async def get(self, key: str, message_type: type[M]) -> tuple[M, int] | None:
        """The message at ``key`` and its revision, or None."""
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        return message_type.FromString(entry.value), entry.revision

    async def values(self, pattern: str, message_type: type[M], limit: int = 1000
                     ) -> list[M]:
        """The messages at keys matching ``pattern`` (NATS wildcards), at most
        ``limit``, in key order of their last change."""
        watcher = await self.kv.watch(pattern, ignore_deletes=True)
        found: list[M] = []
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    break
                if entry.value and len(found) < limit:
                    found.append(message_type.FromString(entry.value))
        finally:
            await watcher.stop()
        return found
