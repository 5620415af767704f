"""Sheet versions against the running stack: a real set, then an addendum
made from it (one sheet re-plotted with a move and an added element, one
re-issued as it was) submitted to the same plan: the plan's current set
(HTTP, gRPC, CLI, current.json), the addendum's record and the first set's
sheets left current."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planzoom.v1 import jobs_pb2
from planzoom_devstack.revise import Edit, revise
from tests.helpers import completed
from tests.integration.test_gateway import assert_problem, bearer

SET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PLAN = jobs_pb2.PlanRef(org="acme", project="revisions", plan="crayfishinn")
DPI = 40


@pytest.fixture(scope="module")
def versions(corpus, client, tmp_path_factory):
    first = completed(client, str(corpus / SET), PLAN, jobs_pb2.JobOptions(dpi=DPI))
    addendum = str(tmp_path_factory.mktemp("revisions") / "addendum.pdf")
    # Sheet 100-00 re-plotted moved and scaled with a new element; 201-00 as it was.
    revise(str(corpus / SET), addendum, [1, 3],
           {1: Edit(shift=(0.02, 0.01), scale=1.02, add=[(0.3, 0.3, 0.05, 0.05)])})
    second = completed(client, addendum, PLAN, jobs_pb2.JobOptions(dpi=DPI))
    return first, second


def test_an_addendum_slips_into_the_plans_current_set(http, stack, versions):
    first, second = versions
    body = http.get(f"/v1/plans/{PLAN.org}/{PLAN.project}/{PLAN.plan}/sheets",
                    headers=bearer(stack)).json()
    assert body["job_id"] == second.job_id
    current = {s["number"]: s for s in body["sheets"]}
    assert list(current) == ["100-00", "200-00", "201-00", "300-00", "400-00", "500-00",
                             "700-00", "701-00"]
    site = current["100-00"]
    assert (site["job_id"], site["page"]) == (second.job_id, 1)
    assert [(v["job_id"], v["page"], v["change"], v["paired_by"]) for v in site["versions"]] \
        == [(second.job_id, 1, "revised", "number"), (first.job_id, 1, "new", "")]
    first_floor = current["201-00"]
    assert (first_floor["job_id"], first_floor["page"]) == (second.job_id, 2)
    assert [v["change"] for v in first_floor["versions"]] == ["unchanged", "new"]
    for number in ("200-00", "300-00", "701-00"):  # not in the addendum: from the first set
        assert current[number]["job_id"] == first.job_id
        assert len(current[number]["versions"]) == 1
    assert current["200-00"]["title"].upper() == "GROUND FLOOR PLAN"


def test_the_addendums_record_says_what_changed_against_what(client, versions):
    first, second = versions
    record = client.get_job(second.job_id)
    site, first_floor = record.pages[0].sheet, record.pages[1].sheet
    assert (site.change, site.paired_by) == ("revised", "number")
    assert (site.previous.job_id, site.previous.page) == (first.job_id, 1)
    assert (first_floor.change, first_floor.previous.page) == ("unchanged", 3)
    assert record.pages[0].content_digest != client.get_job(first.job_id).pages[0].content_digest
    assert record.pages[1].content_digest == client.get_job(first.job_id).pages[2].content_digest
    # The first set's record met no earlier version.
    assert {p.sheet.change for p in client.get_job(first.job_id).pages} == {"new"}


def test_current_json_and_list_sheets_hold_the_versions(client, s3, versions):
    first, second = versions
    key = f"tiles/{PLAN.org}/{PLAN.project}/{PLAN.plan}/current.json"
    current = json.loads(s3.get_object(Bucket="planzoom", Key=key)["Body"].read())
    assert current["job_id"] == second.job_id and current["register_jobs"] == 2
    assert len(current["sheets"]) == 8
    resp = client.list_sheets(PLAN)
    assert [(s.job_id, s.page) for s in resp.sheets][:3] == [
        (second.job_id, 1), (first.job_id, 2), (second.job_id, 2)]
    assert [v.change for v in resp.sheets[0].versions] == ["revised", "new"]


def test_cli_prints_the_plans_current_set(stack, versions):
    from planzoom_cli.main import main

    first, second = versions
    runner = CliRunner()
    env = {**stack.env(), "PLANZOOM_TOKEN": stack.token("acme", "viewer"), "COLUMNS": "200"}
    args = ["sheets", "--org", PLAN.org, "--project", PLAN.project, "--plan", PLAN.plan]
    out = runner.invoke(main, args, env=env, terminal_width=200)
    assert out.exit_code == 0, out.output
    assert f"{second.job_id}:1 revised" in out.output and f"{first.job_id}:1 new" in out.output
    rows = json.loads(runner.invoke(main, [*args, "--json"], env=env).output)["sheets"]
    assert [r["number"] for r in rows][:3] == ["100-00", "200-00", "201-00"]
    bad = runner.invoke(main, ["sheets", "--plan", PLAN.plan], env=env)
    assert bad.exit_code != 0 and "--org" in bad.output


def test_another_orgs_plan_is_refused(http, stack, versions):
    assert_problem(http.get(f"/v1/plans/intruder/{PLAN.project}/{PLAN.plan}/sheets",
                            headers=bearer(stack)), 403)
