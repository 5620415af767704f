"""RAW or TIFF through the running stack: ingest's sniff, inspection and
render in the sandboxed workers agree on what a TIFF-structured upload is
(tests/unit/test_raw_or_tiff.py has the cases and how their files are made)."""

from __future__ import annotations

import struct

import grpc
import pytest
import pyvips
import rawpy

from planzoom.engines.image import normalised
from planzoom.v1 import jobs_pb2
from tests.dzi_check import check_page
from tests.helpers import wait_ended
from tests.unit.test_raw_or_tiff import KDC, PHOTO, exported_tiff, ifd_entries


def test_a_fujifilm_export_and_a_kodak_kdc_convert_at_their_own_size(corpus, client, s3,
                                                                       tmp_path):
    """The TIFF exported from a photo naming FUJIFILM is a 290 x 442 TIFF
    with the photo's pixels, the KDC a 768 x 512 RAW as LibRaw develops it,
    and the corpus DNG with its DNGVersion tag renumbered (sniffed TIFF:
    its CFA SubIFD lies past the header window) is refused as a RAW LibRaw
    cannot read, never shown as its 256 x 171 preview."""
    fuji = exported_tiff(corpus, tmp_path / "fuji-export.tif", "FUJIFILM")
    dng = bytearray((corpus / "media" / "raw-dng-canon-eos6d-photoprism.dng").read_bytes())
    for position, tag in ifd_entries(dng, 8, "<"):
        if tag == 50706:
            struct.pack_into("<H", dng, position, 50000)
    (tmp_path / "no-dngversion.tif").write_bytes(bytes(dng))
    plan = {name: jobs_pb2.PlanRef(org="acme", project="raw-or-tiff", plan=name)
            for name in ("fuji", "kdc", "dng")}
    replies = {"fuji": client.submit(str(fuji), plan["fuji"], jobs_pb2.JobOptions()),
               "kdc": client.submit(str(KDC), plan["kdc"], jobs_pb2.JobOptions())}
    jobs = {name: wait_ended(client, reply.job_id) for name, reply in replies.items()}
    with rawpy.imread(str(KDC)) as raw:
        developed = raw.postprocess(use_camera_wb=True, output_bps=8)
    photo = normalised(pyvips.Image.new_from_file(str(corpus / "media" / PHOTO))).numpy()
    for name, kind, size, reference in (("fuji", "tiff", (290, 442), photo),
                                        ("kdc", "raw", (768, 512), developed)):
        job = jobs[name]
        assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
        assert job.source_kind == kind and job.total_pages == 1
        assert (job.pages[0].width_px, job.pages[0].height_px) == size
        check_page(s3, job.pages[0], None, reference=reference, min_psnr=33.0)

    with pytest.raises(grpc.RpcError) as refused:
        client.submit(str(tmp_path / "no-dngversion.tif"), plan["dng"], jobs_pb2.JobOptions())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LibRaw cannot read this RAW file" in refused.value.details()
