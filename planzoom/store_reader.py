"""Reads of the bucket from an event loop (a tile server's: many small
ones at once), without a thread or boto3's request pipeline per read."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
import urllib.request
from collections import OrderedDict
from urllib.parse import urlsplit

import aiohttp

from planzoom.errors import Unavailable
from planzoom.storage import ObjectNotFound, ObjectStore


class AsyncReader:
    """GETs of the bucket from an event loop, without a thread or boto3's
    request pipeline per read (a tile server's reads, many small ones at
    once): each key gets a presigned GET (SigV4 query authentication, valid
    :data:`URL_SECONDS`, reused for :data:`REUSE_SECONDS`: an archive's
    tiles are many reads of one key) that aiohttp sends on kept-alive
    connections, with ``Range`` or ``If-None-Match`` as plain headers (they
    are not part of the signature). Proxies (``HTTP(S)_PROXY``) and
    ``AWS_CA_BUNDLE`` apply as for boto3. S3 5xx answers and dropped
    connections are tried again (3 tries, then Unavailable). Create and use
    it on one event loop."""

    URL_SECONDS = 900
    REUSE_SECONDS = 600

    def __init__(self, store: ObjectStore, connections: int, keys_kept: int = 4096):
        self.store, self.connections, self.keys_kept = store, connections, keys_kept
        self._urls: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    def _url(self, key: str) -> str:
        now = time.monotonic()
        kept = self._urls.get(key)
        if kept is not None and now - kept[1] < self.REUSE_SECONDS:
            self._urls.move_to_end(key)
            return kept[0]
        url = self.store.presigned_get(key, self.URL_SECONDS)
        self._urls[key] = (url, now)
        if len(self._urls) > self.keys_kept:
            self._urls.popitem(last=False)
        return url

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            bundle = os.environ.get("AWS_CA_BUNDLE")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.connections,
                    ssl=ssl.create_default_context(cafile=bundle) if bundle else True),
                timeout=aiohttp.ClientTimeout(total=60, connect=10),
                auto_decompress=False)
            # The environment's proxy, looked up once (aiohttp's trust_env
            # reads it, and ~/.netrc, for every request).
            endpoint = self.store.client.meta.endpoint_url
            url = urlsplit(endpoint)
            proxy = urllib.request.getproxies().get(url.scheme)
            self._proxy = None if not proxy or urllib.request.proxy_bypass(
                url.hostname or "") else proxy
        return self._session

    async def _get(self, key: str, headers: dict[str, str]) -> tuple[int, bytes, dict]:
        failure = ""
        for attempt in range(3):
            try:
                async with self._http().get(self._url(key), headers=headers,
                                            proxy=self._proxy) as response:
                    status, body = response.status, await response.read()
                    if status == 404:
                        raise ObjectNotFound(key)
                    if status < 400:
                        return status, body, response.headers
                    code = re.search(rb"<Code>(.*?)</Code>", body)
                    failure = code.group(1).decode() if code else f"HTTP {status}"
                    if status < 500:
                        raise Unavailable(f"the store refused a read: {failure}")
            except (TimeoutError, aiohttp.ClientError) as e:
                failure = type(e).__name__
            await asyncio.sleep(0.1 * (attempt + 1))
        raise Unavailable(f"the store did not answer a read ({failure})")

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        """As :meth:`ObjectStore.get_range`."""
        _, body, _ = await self._get(key, {"Range": f"bytes={offset}-{offset + length - 1}"})
        return body

    async def get_if_changed(self, key: str, etag: str | None
                             ) -> tuple[bytes | None, str, str]:
        """(bytes, ETag, Content-Type) of ``key``; bytes are None when the
        object's ETag is still ``etag`` (S3 answered 304 Not Modified to
        ``If-None-Match``). Raises ObjectNotFound."""
        status, body, headers = await self._get(key, {"If-None-Match": etag} if etag else {})
        if status == 304:
            return None, etag or "", ""
        return body, headers.get("etag", ""), headers.get("content-type", "")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
