"""S3 access (SeaweedFS, MinIO, AWS S3, Cloudflare R2) through one boto3 client,
and for tiles a cheaper PUT that botocore signs and urllib3 sends
(:meth:`ObjectStore.put_small`); a tile server's reads from an event loop
are :class:`planzoom.store_reader.AsyncReader`'s.

boto3 clients and urllib3 pools are thread-safe; services call these
blocking methods from worker threads (``asyncio.to_thread``). Transient
errors (throttling, 5xx, connection resets) are retried with exponential
backoff and jitter: by botocore's "standard" retry mode, and for
``put_small`` by urllib3 with the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import urllib.request
import zlib
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlsplit

import boto3
import urllib3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path

from planzoom import metrics
from planzoom.config import Settings
from planzoom.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

# Multipart above 16 MiB, 16 MiB parts, 8 parts in flight.
TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=8,
)


#: Retries of :meth:`ObjectStore.put_small`, like botocore's standard mode:
#: connection errors and 500/502/503/504 (503 is S3's SlowDown), exponential
#: backoff from 0.1 s with jitter, at most 8 retries.
SMALL_PUT_RETRY = urllib3.Retry(
    total=8, status_forcelist=(500, 502, 503, 504), allowed_methods=None,
    backoff_factor=0.1, backoff_max=5.0, backoff_jitter=0.1, raise_on_status=False)
#: Lifetime of the signature of one small PUT (it is sent at once).
SMALL_PUT_SIGNATURE_SECONDS = 900


#: S3 error codes that mean "no such object".
_MISSING = ("404", "NoSuchKey", "NotFound")


class PutFailed(Unavailable):
    """The store refused a PUT after its retries; the message gives S3's
    error code and message."""

    reason = "S3_PUT_FAILED"


class WriteConflict(Unavailable):
    """A conditional write lost: the object changed (or appeared) since it
    was read; read it again."""

    reason = "CONFLICT"

    def __init__(self, key: str):
        super().__init__(f"{key} changed while it was being written; try again")


class ObjectNotFound(NotFound):
    """No object at the key."""

    reason = "OBJECT_NOT_FOUND"

    def __init__(self, key: str):
        super().__init__(f"no object at {key}")
        self.key = key


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING


class ObjectStore:
    """One S3 bucket. Keys come from :mod:`planzoom.keys`."""

    def __init__(self, settings: Settings, credentials: tuple[str, str] | None = None):
        """``credentials`` (access key, secret key) override the standard AWS
        variables and credential chain."""
        self.bucket = settings.s3_bucket
        access, secret = credentials or (None, None)
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(
                retries={"mode": "standard", "max_attempts": 8},
                max_pool_connections=settings.s3_max_connections,
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )
        metrics.count_s3_retries(self.client)
        self._http = self._small_put_pool(settings)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            log.info("creating bucket", extra={"bucket": self.bucket})
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as e2:
                if e2.response["Error"]["Code"] not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """Object size in bytes, or None if the object does not exist."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if _missing(e):
                return None
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str, *,
                  if_match: str | None = None, if_absent: bool = False) -> None:
        """PUT ``data`` at ``key``; with ``if_match`` (an ETag) only over that
        version, with ``if_absent`` only if there is no object (conditional
        writes: If-Match, If-None-Match ``*``; RFC 9110 13.1). Raises
        WriteConflict when the condition fails."""
        extra = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type, **extra)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if extra and status in (409, 412):  # 409: a concurrent conditional write
                raise WriteConflict(key) from None
            raise

    def put_small(self, key: str, data: bytes, content_type: str) -> int:
        """PUT ``data`` (a tile: bytes, up to a few MiB) at ``key`` with less
        than half the CPU of ``put_object`` (boto3's request building, event
        hooks and response parsing dominate a small PUT; docs/performance.md
        has the comparison). botocore signs the request (a presigned URL:
        SigV4 query authentication, valid 15 minutes) and urllib3 sends it on
        kept-alive connections, with ``Content-MD5`` so the store checks the
        body (RFC 1864). Retries as :data:`SMALL_PUT_RETRY`; returns how many
        there were. Raises PutFailed if the store still refuses it, and
        urllib3's MaxRetryError if it cannot be reached."""
        url = self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=SMALL_PUT_SIGNATURE_SECONDS)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        response = self._http.request(
            "PUT", url, body=data, headers={"Content-Type": content_type, "Content-MD5": md5})
        if response.status >= 300:
            body = response.data.decode("utf-8", "replace")
            code = re.search(r"<Code>(.*?)</Code>", body)
            message = re.search(r"<Message>(.*?)</Message>", body)
            raise PutFailed(f"{code.group(1) if code else f'HTTP {response.status}'}: "
                            f"{message.group(1) if message else body[:200]}")
        return len(response.retries.history) if response.retries else 0

    def _small_put_pool(self, settings: Settings) -> urllib3.PoolManager:
        """urllib3 connections for :meth:`put_small`: as many as boto3's, the
        CA bundle boto3 uses, and the proxy the environment names, if any."""
        url = urlsplit(self.client.meta.endpoint_url)
        kwargs = {"maxsize": settings.s3_max_connections, "block": False,
                  "retries": SMALL_PUT_RETRY, "timeout": urllib3.Timeout(connect=10, read=60)}
        if url.scheme == "https":
            kwargs["ca_certs"] = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
        proxy = urllib.request.getproxies().get(url.scheme)
        if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
            return urllib3.ProxyManager(proxy, **kwargs)
        return urllib3.PoolManager(**kwargs)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag. Raises ObjectNotFound."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _missing(e):
                raise ObjectNotFound(key) from None
            raise
        with obj["Body"] as body:
            return body.read(), obj["ETag"]

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes. Raises ObjectNotFound."""
        return self.get_stream(key).read()

    def get_json(self, key: str, limit: int, gzipped: bool = False) -> dict | None:
        """The JSON object at ``key`` (gzip-compressed with ``gzipped``), or
        None when it is missing, over ``limit`` bytes (stored, and once
        decompressed) or not JSON: what a stage wrote for another to read
        (word sidecars, candidates, sheet indexes) is read with a bound,
        since a stage that parsed a hostile file may have written it."""
        try:
            size = self.size(key)
            if size is None or size > limit:
                return None
            data = self.get_bytes(key)
            if gzipped:
                unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing, RFC 1952
                data = unzip.decompress(data, limit)
                if unzip.unconsumed_tail:
                    raise ValueError(f"over {limit} bytes decompressed")
            doc = json.loads(data)
            return doc if isinstance(doc, dict) else None
        except (ObjectNotFound, OSError, ValueError, zlib.error) as e:
            log.warning("unreadable %s: %s", key, e)
            return None

    def get_stream(self, key: str) -> BinaryIO:
        """A streaming body for ``key``; the caller reads and closes it.
        Raises ObjectNotFound."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as e:
            if _missing(e):
                raise ObjectNotFound(key) from None
            raise

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``key`` from ``offset`` (an HTTP range GET,
        RFC 9110 14.1.2; fewer if the object ends first). Raises
        ObjectNotFound."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key,
                                         Range=f"bytes={offset}-{offset + length - 1}")
        except ClientError as e:
            if _missing(e):
                raise ObjectNotFound(key) from None
            raise
        with obj["Body"] as body:
            return body.read()

    def presigned_get(self, key: str, expires_seconds: int) -> str:
        """A URL that GETs ``key`` without credentials until it expires
        (SigV4 query authentication)."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_seconds)

    def upload_file(self, path: str, key: str, content_type: str) -> None:
        """Upload a local file, as a multipart upload above 16 MiB."""
        self.client.upload_file(
            path, self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=TRANSFER
        )

    def download_file(self, key: str, path: str) -> None:
        """Download ``key`` to the local file ``path``. Raises ObjectNotFound."""
        try:
            self.client.download_file(self.bucket, key, path, Config=TRANSFER)
        except ClientError as e:
            if _missing(e):
                raise ObjectNotFound(key) from None
            raise

    def list_keys(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        """Keys under ``prefix``; with ``recursive=False`` only those with no
        further "/" after it (one level, like a directory listing)."""
        return (key for key, _ in self.list_objects(prefix, recursive))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        return self.delete_keys(list(self.list_keys(prefix)))

    def delete_keys(self, keys: list[str]) -> int:
        """Delete ``keys`` (DeleteObjects, 1,000 a request); returns how many."""
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def presigned_post(self, key: str, content_type: str, min_bytes: int, max_bytes: int,
                       expires_seconds: int) -> tuple[str, dict[str, str]]:
        """A browser-based POST upload of exactly ``key``: the URL and the form
        fields to send with the file (the file goes last, as field ``file``).
        Its SigV4-signed policy binds the key, the Content-Type and
        ``content-length-range`` [``min_bytes``, ``max_bytes``]; the store
        refuses anything else (403). Source: S3 API reference, "Browser-based
        uploads using POST"."""
        post = self.client.generate_presigned_post(
            self.bucket, key, Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type},
                        ["content-length-range", min_bytes, max_bytes]],
            ExpiresIn=expires_seconds)
        return post["url"], post["fields"]

    # -- multipart uploads (S3 API reference, "Multipart upload overview"):
    # parts 1..10,000 of 5 MiB to 5 GiB each, the last one smaller.

    def start_multipart(self, key: str, content_type: str) -> str:
        """Begin a multipart upload of ``key``; returns its UploadId."""
        return self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type)["UploadId"]

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Store part ``number`` (1-based) of a multipart upload, checked by
        Content-MD5; returns its ETag."""
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        return self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                       PartNumber=number, Body=data, ContentMD5=md5)["ETag"]

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        """Join the parts (ETags of parts 1..n, in order) into the object."""
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": n}
                                       for n, etag in enumerate(etags, 1)]})

    def abort_uploads(self, key: str) -> int:
        """Abort every unfinished multipart upload of exactly ``key`` (one
        a stopped writer left); returns how many."""
        found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        stale = [u for u in found.get("Uploads", []) if u["Key"] == key]
        for upload in stale:
            self.abort_multipart(key, upload["UploadId"])
        return len(stale)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts (one already gone is fine)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                raise

    def _contents(self, prefix: str, recursive: bool) -> Iterator[dict]:
        """ListObjectsV2's entries under ``prefix`` (one level only unless
        ``recursive``), page after page."""
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {} if recursive else {"Delimiter": "/"}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra):
            yield from page.get("Contents", [])

    def list_sizes(self, prefix: str, recursive: bool = True) -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every object under ``prefix``; with
        ``recursive=False`` as :meth:`list_keys`."""
        for obj in self._contents(prefix, recursive):
            yield obj["Key"], int(obj["Size"])

    def list_folders(self, prefix: str) -> Iterator[str]:
        """The "folders" one level under ``prefix`` (ListObjectsV2's common
        prefixes with delimiter "/"), each ending in "/"."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))

    def list_objects(self, prefix: str, recursive: bool = True
                     ) -> Iterator[tuple[str, float]]:
        """(key, last modified as epoch seconds) of every object under
        ``prefix``; with ``recursive=False`` as :meth:`list_keys`."""
        for obj in self._contents(prefix, recursive):
            yield obj["Key"], obj["LastModified"].timestamp()
