"""S3 access (MinIO, AWS S3, Cloudflare R2, moto) through one boto3 client.

boto3 clients are thread-safe; services call these blocking methods from
worker threads (``asyncio.to_thread``). Transient errors (throttling, 5xx,
connection resets) are retried by botocore's "standard" retry mode with
exponential backoff and jitter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from planzoom import metrics
from planzoom.config import Settings

log = logging.getLogger(__name__)

# Multipart above 16 MiB, 16 MiB parts, 8 parts in flight.
TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=8,
)


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
            ),
        )
        metrics.count_s3_retries(self.client)

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
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def size(self, key: str) -> int | None:
        """Object size in bytes, or None if the object does not exist."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_stream(self, key: str) -> BinaryIO:
        """A streaming body for ``key``; the caller reads and closes it."""
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def upload_file(self, path: str, key: str, content_type: str) -> None:
        """Upload a local file, as a multipart upload above 16 MiB."""
        self.client.upload_file(
            path, self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=TRANSFER
        )

    def download_file(self, key: str, path: str) -> None:
        self.client.download_file(self.bucket, key, path, Config=TRANSFER)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy (multipart for large objects)."""
        self.client.copy({"Bucket": self.bucket, "Key": src_key}, self.bucket, dst_key,
                         Config=TRANSFER)

    def list_keys(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        """Keys under ``prefix``; with ``recursive=False`` only those with no
        further "/" after it (one level, like a directory listing)."""
        paginator = self.client.get_paginator("list_objects_v2")
        extra = {} if recursive else {"Delimiter": "/"}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        keys = list(self.list_keys(prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def presigned_put(self, key: str, expires_seconds: int) -> str:
        return self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_seconds,
        )
