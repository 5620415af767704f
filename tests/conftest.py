"""Fixtures: the corpus, and (for integration tests) one embedded stack per
session: a real NATS server with JetStream, moto's S3 server over HTTP and
the four services as processes, talked to over real gRPC sockets."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from planzoom.client import Client
from planzoom.stack import EmbeddedStack, Ports

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PLANZOOM_CORPUS", ROOT.parent / "shared" / "corpus"))

#: Limits of the test stack, small enough to test without huge inputs.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PAGES = 200


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "SOURCES.md").exists():
        pytest.fail(f"the PDF corpus is missing at {CORPUS} (expected ../shared/corpus beside "
                    "the project, or set PLANZOOM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> EmbeddedStack:
    s = EmbeddedStack(
        data_dir=tmp_path_factory.mktemp("stack"),
        ports=Ports.free(),
        extra_env={
            "PLANZOOM_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "PLANZOOM_MAX_PAGES": str(MAX_PAGES),
            "PLANZOOM_LOG_LEVEL": "INFO",
        },
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack) -> Client:
    env = stack.env()
    c = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"])
    yield c
    c.close()


@pytest.fixture(scope="session")
def s3(stack):
    env = stack.env()
    return boto3.client(
        "s3", endpoint_url=env["PLANZOOM_S3_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def list_keys(s3, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="planzoom", Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys
