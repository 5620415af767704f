"""Fuzzed checks of untrusted input: ids, magic bytes, job options, the
upload spool."""

from __future__ import annotations

import os

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from planzoom.config import Settings
from planzoom.errors import PlanzoomError
from planzoom.ids import ID_PATTERN, InvalidId, check_id
from planzoom.media import HEADER_WINDOW, PDF_WINDOW, Unsupported, sniff
from planzoom.options import resolve_options
from planzoom.v1 import jobs_pb2
from services.ingest.spool import Spool


@given(st.text(max_size=200))
def test_ids_fuzz(value):
    try:
        assert check_id("plan", value) == value
    except InvalidId:
        assert not ID_PATTERN.fullmatch(value)
        return
    assert "/" not in value and ".." not in value and "." not in value
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    assert 1 <= len(value) <= 64


@given(st.binary(max_size=2048))
def test_sniff_fuzz(head):
    """Any bytes: a kind or Unsupported, and a PDF header makes a PDF unless
    an image signature comes first."""
    try:
        kind = sniff(head)
    except Unsupported as e:
        assert b"%PDF-" not in head[:PDF_WINDOW] and e.message
        return
    if kind.name == "pdf":
        assert b"%PDF-" in head[:PDF_WINDOW]


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**32 - 1),
       st.one_of(st.none(), st.integers(0, 2**32 - 1)), st.integers(0, 2**32 - 1))
def test_options_fuzz(dpi, tile_size, overlap, quality):
    opts = jobs_pb2.JobOptions(dpi=dpi, tile_size=tile_size, jpeg_quality=quality)
    if overlap is not None:
        opts.overlap = overlap
    try:
        out = resolve_options(opts, Settings())
    except PlanzoomError as e:
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT and e.field
        return
    assert 10 <= out.dpi <= 1200 and 64 <= out.tile_size <= 4096
    assert 0 <= out.overlap <= 16 and 1 <= out.jpeg_quality <= 100


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=700), max_size=8), st.integers(1, 3000))
def test_spool_fuzz(tmp_path_factory, chunks, limit):
    spool = Spool(str(tmp_path_factory.getbasetemp()), limit)
    try:
        for c in chunks:
            spool.write(c)
        spool.finish()
        data = b"".join(chunks)
        assert len(data) <= limit and spool.kind == sniff(data[:HEADER_WINDOW])
    except PlanzoomError as e:
        data = b"".join(chunks)
        assert e.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        if e.reason == "UPLOAD_TOO_LARGE":
            assert len(data) > limit
    finally:
        spool.discard()
        assert not os.path.exists(spool.path)
