"""Progress events folded into job records, and which reports are trusted
(services.progress.fold, services.progress.records)."""

from __future__ import annotations

import pytest

from planzoom import keys
from planzoom.ids import new_job_id
from planzoom.v1 import events_pb2, jobs_pb2
from services.progress.fold import apply_event, end_if_pages_ended, pages_ended
from tests.records import event, pending_job


def test_fold_moves_forward_only_and_completes():
    job = pending_job(2)
    assert apply_event(job, event(1, jobs_pb2.PAGE_STATE_RENDERING))
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING
    assert apply_event(job, event(1, jobs_pb2.PAGE_STATE_TILING, width_px=10))
    assert not apply_event(job, event(1, jobs_pb2.PAGE_STATE_RENDERING))  # late report
    assert job.pages[0].state == jobs_pb2.PAGE_STATE_TILING
    assert apply_event(job, event(1, jobs_pb2.PAGE_STATE_DONE, levels=5))
    assert not apply_event(job, event(1, jobs_pb2.PAGE_STATE_DONE, levels=5))  # redelivery
    assert (job.completed_pages, job.percent) == (1, 50.0)
    assert job.pages[0].width_px == 10 and job.pages[0].levels == 5
    assert apply_event(job, event(2, jobs_pb2.PAGE_STATE_DONE))
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.percent == 100.0
    assert not apply_event(job, event(2, jobs_pb2.PAGE_STATE_FAILED, error="x"))


def test_fold_failed_page_fails_job_at_the_end():
    job = pending_job(2)
    apply_event(job, event(1, jobs_pb2.PAGE_STATE_FAILED, error="render: broken"))
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING
    apply_event(job, event(2, jobs_pb2.PAGE_STATE_DONE))
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert "page 1: render: broken" in job.error and job.failed_pages == 1
    with pytest.raises(ValueError):
        apply_event(pending_job(1), event(3, jobs_pb2.PAGE_STATE_DONE))


def test_fold_takes_a_preview_at_any_open_state_and_merges_variants_by_name():
    """A preview pass reports no state: its overview and thumbnail land
    whatever the page's state short of its end, and a later report of one
    variant replaces only that one."""
    job = pending_job(2)
    job.pages[0].width_pt, job.pages[0].height_pt = 612, 792  # its geometry, from ingest
    apply_event(job, event(1, jobs_pb2.PAGE_STATE_RENDERING, started_at={"seconds": 5}))
    preview = event(1, jobs_pb2.PAGE_STATE_UNSPECIFIED, variants=[
        jobs_pb2.Variant(name="overview", format="jpg", width=791, height=1024, level=12),
        jobs_pb2.Variant(name="thumbnail", format="jpg", width=232, height=300)])
    assert apply_event(job, preview)
    page = job.pages[0]
    assert page.state == jobs_pb2.PAGE_STATE_RENDERING and page.started_at.seconds == 5
    assert [v.name for v in page.variants] == ["overview", "thumbnail"]
    assert (page.width_pt, page.height_pt) == (612, 792) and page.variants[0].level == 12
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING
    assert not apply_event(job, preview)  # redelivered: nothing new
    tiling = event(1, jobs_pb2.PAGE_STATE_TILING, variants=[
        jobs_pb2.Variant(name="thumbnail", format="jpg", width=300, height=388)])
    assert apply_event(job, tiling)
    assert sorted((v.name, v.width) for v in page.variants) == [("overview", 791),
                                                                 ("thumbnail", 300)]
    # A preview of a pending page moves nothing: the job stays PENDING.
    other = pending_job(1)
    assert apply_event(other, event(1, jobs_pb2.PAGE_STATE_UNSPECIFIED, variants=[
        jobs_pb2.Variant(name="thumbnail", format="jpg", width=1, height=1)]))
    assert other.state == jobs_pb2.JOB_STATE_PENDING
    assert other.pages[0].state == jobs_pb2.PAGE_STATE_PENDING
    # Once the page has ended, a late preview changes nothing.
    apply_event(job, event(1, jobs_pb2.PAGE_STATE_DONE))
    assert not apply_event(job, event(1, jobs_pb2.PAGE_STATE_UNSPECIFIED, variants=[
        jobs_pb2.Variant(name="overview", format="jpg", width=1, height=1)]))


def test_settle_ends_a_record_whose_pages_have_all_ended():
    job = pending_job(2)
    apply_event(job, event(1, jobs_pb2.PAGE_STATE_DONE))
    assert not end_if_pages_ended(job)  # page 2 is still open
    apply_event(job, event(2, jobs_pb2.PAGE_STATE_DONE))
    job.state = jobs_pb2.JOB_STATE_PROCESSING  # as the interim record stores it
    assert pages_ended(job) and end_if_pages_ended(job)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE
    assert not end_if_pages_ended(job)


def test_a_report_cannot_name_where_a_page_is():
    """Keys a stage puts in its report are dropped where reports come in;
    the ones shown are derived from the job."""
    from services.progress.records import trusted_event

    plan = jobs_pb2.PlanRef(org="acme", project="p", plan="q")
    job = jobs_pb2.Job(job_id=new_job_id(), plan=plan, total_pages=2, source_kind="pdf")
    job.pages.add(page=1)
    job.pages.add(page=2)
    evil = "tiles/evil/evil/evil/x/page-1.dzi"

    def report(stage: str, page: jobs_pb2.PageRecord) -> events_pb2.ProgressEvent:
        data = events_pb2.ProgressEvent(job_id=job.job_id, stage=stage,
                                        page=page).SerializeToString()
        return trusted_event(f"progress.{stage}.{job.job_id}", data)

    tiling = jobs_pb2.PageRecord(page=2, state=jobs_pb2.PAGE_STATE_TILING, dzi_key=evil)
    tiling.variants.add(name="thumbnail", format="jpg", key=evil)
    tiling.video.master_key = evil
    assert apply_event(job, report("render", tiling))
    done = jobs_pb2.PageRecord(page=1, state=jobs_pb2.PAGE_STATE_DONE, dzi_key=evil)
    assert apply_event(job, report("tile", done))
    assert evil not in str(job)
    shown = keys.with_keys(job)
    assert evil not in str(shown)
    assert shown.pages[0].dzi_key == keys.dzi_key(plan, job.job_id, 1)
    assert not shown.pages[1].dzi_key  # not DONE yet
    assert shown.pages[1].variants[0].key == keys.variant_key(plan, job.job_id, 2, "thumbnail",
                                                              "jpg")


def test_a_report_with_a_variant_planzoom_does_not_make_is_refused():
    from services.progress.records import ForgedEvent, trusted_event

    job_id = new_job_id()
    page = jobs_pb2.PageRecord(page=1, state=jobs_pb2.PAGE_STATE_TILING)
    page.variants.add(name="../../evil", format="jpg")
    data = events_pb2.ProgressEvent(job_id=job_id, stage="render",
                                    page=page).SerializeToString()
    with pytest.raises(ForgedEvent):
        trusted_event(f"progress.render.{job_id}", data)
    # A record that holds one anyway (written before the check) still reads.
    plan = jobs_pb2.PlanRef(org="acme", project="p", plan="q")
    job = jobs_pb2.Job(job_id=job_id, plan=plan, total_pages=1, source_kind="pdf")
    job.pages.add(page=1).variants.add(name="../../evil", format="jpg", key="x")
    assert keys.with_keys(job).pages[0].variants[0].key == ""


def test_a_report_without_its_stages_grant_for_the_job_is_refused():
    """With grants on, an event is folded only if it carries the grant of
    its stage for its job: not another job's, not another stage's."""
    from planzoom.grants import WorkGrants
    from services.progress.records import ForgedEvent, trusted_event

    grants, job_id, other = WorkGrants("k" * 32), new_job_id(), new_job_id()

    def event(grant: str) -> bytes:
        return events_pb2.ProgressEvent(job_id=job_id, stage="render", grant=grant, page=(
            jobs_pb2.PageRecord(page=1, state=jobs_pb2.PAGE_STATE_RENDERING))).SerializeToString()

    subject = f"progress.render.{job_id}"
    assert trusted_event(subject, event(grants.mint("render", job_id)), grants).job_id == job_id
    for forged in ("", grants.mint("render", other), grants.mint("tile", job_id),
                   WorkGrants("x" * 32).mint("render", job_id), "é" * 64):
        with pytest.raises(ForgedEvent, match="without its grant"):
            trusted_event(subject, event(forged), grants)
    with pytest.raises(ValueError):
        WorkGrants("short")
