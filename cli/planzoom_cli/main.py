"""``planzoom``: the command-line client.

Commands (submit, status, watch, jobs, cancel) talk to the services over
gRPC only, at PLANZOOM_INGEST_ADDR and PLANZOOM_PROGRESS_ADDR (or the
flags). Installed packages add commands through the ``planzoom.commands``
entry-point group (the embedded stack adds ``up`` and ``demo``).
Exit codes: 0 success, 1 the job FAILED or was CANCELLED, 2 a request was
refused or a service could not be reached.
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib.metadata import entry_points

import click
import grpc
from rich.table import Table

from planzoom.config import get_settings
from planzoom.sheets import version_json
from planzoom.states import ended, job_state_name
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_cli.display import console, err_console, print_job, watch_job


def _client(ctx: click.Context) -> Client:
    if not ctx.obj["token"]:
        err_console.print("[red]error:[/red] no token: set PLANZOOM_TOKEN or pass --token "
                          "(for a stack started with 'planzoom up': planzoom token --org ORG)")
        sys.exit(2)
    return Client(ctx.obj["ingest_addr"], ctx.obj["progress_addr"], token=ctx.obj["token"],
                  ca_file=ctx.obj["ca_file"], server_name=ctx.obj["server_name"])


def fail_rpc(e: grpc.RpcError) -> None:
    """Print the refusal as ``error: CODE: message`` and exit with status 2."""
    err_console.print(f"[red]error:[/red] {e.code().name}: {e.details()}")
    sys.exit(2)


@click.group()
@click.option("--ingest-addr", envvar="PLANZOOM_INGEST_ADDR",
              default=lambda: get_settings().ingest_addr, show_default="127.0.0.1:50051",
              help="IngestService host:port (PLANZOOM_INGEST_ADDR).")
@click.option("--progress-addr", envvar="PLANZOOM_PROGRESS_ADDR",
              default=lambda: get_settings().progress_addr, show_default="127.0.0.1:50052",
              help="ProgressService host:port (PLANZOOM_PROGRESS_ADDR).")
@click.option("--token", envvar="PLANZOOM_TOKEN", default=None,
              help="Bearer token (a JWT naming your org and role) (PLANZOOM_TOKEN).")
@click.option("--ca-file", envvar="PLANZOOM_TLS_CA_FILE", default=None,
              help="CA bundle of the services' TLS certificates; plaintext without "
                   "(PLANZOOM_TLS_CA_FILE).")
@click.option("--tls-server-name", envvar="PLANZOOM_TLS_SERVER_NAME", default=None,
              help="Name the services' certificate must carry when the address is another "
                   "(e.g. pz-planzoom-ingest through a port-forward) (PLANZOOM_TLS_SERVER_NAME).")
@click.pass_context
def main(ctx: click.Context, ingest_addr: str, progress_addr: str, token: str | None,
         ca_file: str | None, tls_server_name: str | None) -> None:
    """planzoom: construction-plan PDFs to Deep Zoom Image tile pyramids."""
    ctx.obj = {"ingest_addr": ingest_addr, "progress_addr": progress_addr, "token": token,
               "ca_file": ca_file, "server_name": tls_server_name}


def plan_options(f):
    for opt in reversed([
        click.option("--org", required=True, help="Organisation id."),
        click.option("--project", required=True, help="Project id."),
        click.option("--plan", "plan_id", required=True, help="Plan id."),
    ]):
        f = opt(f)
    return f


def job_options(f):
    for opt in reversed([
        click.option("--dpi", type=float, default=0, help="Rendering DPI (default 300)."),
        click.option("--tile-size", type=int, default=0, help="DZI tile size, px (default 256)."),
        click.option("--overlap", type=int, default=None, help="DZI overlap, px (default 1)."),
        click.option("--quality", type=int, default=0, help="JPEG quality 1-100 (default 90)."),
        click.option("--layout", type=click.Choice(["files", "archive"]), default=None,
                     help="How each page's pyramid is stored: one object per tile, or the "
                          "whole pyramid in one archive (default: the service's)."),
    ]):
        f = opt(f)
    return f


def options_from_flags(dpi, tile_size, overlap, quality, layout=None) -> jobs_pb2.JobOptions:
    """JobOptions from the job_options flags (0 / None: the service's default)."""
    o = jobs_pb2.JobOptions(dpi=dpi, tile_size=tile_size, jpeg_quality=quality)
    if overlap is not None:
        o.overlap = overlap
    if layout is not None:
        o.layout = jobs_pb2.PyramidLayout.Value(f"PYRAMID_LAYOUT_{layout.upper()}")
    return o


def exit_unless_complete(job: jobs_pb2.Job) -> None:
    """Exit with status 1, saying why, unless the job is COMPLETE."""
    if job.state != jobs_pb2.JOB_STATE_COMPLETE:
        err_console.print(f"[red]job {job.job_id} {job_state_name(job.state)}:[/red] {job.error}")
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@plan_options
@job_options
@click.option("--watch/--no-watch", default=False, help="Follow the job(s) to their end.")
@click.pass_context
def submit(ctx, path, org, project, plan_id, dpi, tile_size, overlap, quality, layout, watch):
    """Upload PATH as a new job for ORG/PROJECT/PLAN: a plan set (PDF) or a
    photo, scan or RAW image, recognised by its bytes.

    PATH may be a folder: each file in it (not its subfolders; hidden files
    skipped) becomes its own job, for plan PLAN-<file name> (the name made
    a valid id). A file that is refused is reported and the others go on;
    the exit status is then 2."""
    client = _client(ctx)
    options = options_from_flags(dpi, tile_size, overlap, quality, layout)
    if not os.path.isdir(path):
        try:
            job = _submit_one(client, path, jobs_pb2.PlanRef(org=org, project=project,
                                                            plan=plan_id), options, watch)
        except grpc.RpcError as e:
            fail_rpc(e)
        if job is not None:
            exit_unless_complete(job)
        return
    files = sorted(f for f in os.listdir(path)
                   if not f.startswith(".") and os.path.isfile(os.path.join(path, f)))
    if not files:
        err_console.print(f"[red]error:[/red] {path} has no files to submit")
        sys.exit(2)
    refused, ended = 0, []
    for name in files:
        plan = jobs_pb2.PlanRef(org=org, project=project, plan=folder_plan_id(plan_id, name))
        console.print(f"{name} → plan {plan.plan}")
        try:
            ended.append(_submit_one(client, os.path.join(path, name), plan, options, watch))
        except grpc.RpcError as e:
            refused += 1
            err_console.print(f"[red]  refused:[/red] {e.code().name}: {e.details()}")
    console.print(f"{len(files) - refused} of {len(files)} files submitted")
    if refused:
        sys.exit(2)
    for job in ended:
        if job is not None:
            exit_unless_complete(job)


def folder_plan_id(plan_id: str, file_name: str) -> str:
    """``<plan>-<file name>`` as a valid id: characters other than letters,
    digits, '_' and '-' become '-', cut to 64 characters."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", file_name).strip("-") or "file"
    return f"{plan_id}-{stem}"[:64].rstrip("-")


def _submit_one(client, path: str, plan: jobs_pb2.PlanRef, options, watch: bool
                ) -> jobs_pb2.Job | None:
    """Upload one file; with ``watch``, follow it and return its final
    record. Raises grpc.RpcError if it is refused."""
    resp = client.submit(path, plan, options)
    note = " (same file and options as an existing job)" if resp.deduplicated else ""
    console.print(f"job {resp.job_id}: {resp.job.total_pages} pages{note}")
    if not watch:
        return None
    job = watch_job(client, resp.job_id)
    print_job(job)
    return job


@main.command()
@click.argument("job_id")
@click.pass_context
def status(ctx, job_id):
    """Print a job's record."""
    try:
        job = _client(ctx).get_job(job_id)
    except grpc.RpcError as e:
        fail_rpc(e)
    print_job(job)
    if ended(job):
        exit_unless_complete(job)


@main.command()
@click.argument("job_id")
@click.pass_context
def watch(ctx, job_id):
    """Follow a job with a progress bar until it ends."""
    try:
        job = watch_job(_client(ctx), job_id)
    except grpc.RpcError as e:
        fail_rpc(e)
    print_job(job)
    exit_unless_complete(job)


@main.command()
@click.argument("job_id")
@click.option("--reason", default="", help="Recorded in the job's error.")
@click.pass_context
def cancel(ctx, job_id, reason):
    """Cancel a job that has not ended."""
    try:
        job = _client(ctx).cancel(job_id, reason)
    except grpc.RpcError as e:
        fail_rpc(e)
    console.print(f"job {job.job_id} {job_state_name(job.state)}")


@main.command()
@plan_options
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def jobs(ctx, org, project, plan_id, limit):
    """List a plan's jobs, newest first."""
    try:
        found = _client(ctx).list_jobs(jobs_pb2.PlanRef(org=org, project=project, plan=plan_id),
                                       limit)
    except grpc.RpcError as e:
        fail_rpc(e)
    table = Table("job", "state", "pages", "done", "source")
    for j in found:
        table.add_row(j.job_id, job_state_name(j.state), str(j.total_pages),
                      str(j.completed_pages), j.source_name)
    console.print(table)


@main.command()
@click.argument("job_id", required=False)
@click.option("--org", help="With --project and --plan: the plan's current set instead.")
@click.option("--project", help="Project id (with --plan).")
@click.option("--plan", "plan_id", help="Plan id: print the plan's current set and versions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def sheets(ctx, job_id, org, project, plan_id, as_json):
    """Print a job's sheet index: each page's sheet number, title,
    discipline, scale, revision mark and issue date, confidence (0-1), source and change against the
    plan's previous version; "review" marks a sheet whose number needs a
    person's look. Filled in when the job ends.

    With --org/--project/--plan instead of JOB_ID: the plan's current set,
    the newest version of every sheet, with its versions newest first
    (job:page, change, how it was paired; docs/revisions.md)."""
    if plan_id or org or project:
        if job_id or not (org and project and plan_id):
            raise click.UsageError("give either JOB_ID or all of --org, --project and --plan")
        _plan_sheets(ctx, jobs_pb2.PlanRef(org=org, project=project, plan=plan_id), as_json)
        return
    if not job_id:
        raise click.UsageError("give JOB_ID, or --org, --project and --plan")
    try:
        job = _client(ctx).get_job(job_id)
    except grpc.RpcError as e:
        fail_rpc(e)
    rows = [{"page": p.page, "number": p.sheet.number or None, "title": p.sheet.title or None,
             "discipline": p.sheet.discipline or None, "scale": p.sheet.scale or None,
             "revision": p.sheet.revision or None, "issued": p.sheet.issued or None,
             "confidence": round(p.sheet.confidence, 2), "needs_review": p.sheet.needs_review,
             "source": p.sheet.source or "none", "change": p.sheet.change or None}
            for p in job.pages]
    if as_json:
        click.echo(json.dumps({"job_id": job.job_id, "sheets": rows}, ensure_ascii=False,
                              indent=2))
        return
    if not ended(job):
        console.print(f"job {job.job_id} is {job_state_name(job.state)}: its sheets are "
                      "read when it ends")
    table = Table("page", "sheet", "title", "discipline", "scale", "rev / issued", "confidence",
                  "source", "change", "")
    for r in rows:
        table.add_row(str(r["page"]), r["number"] or "-", r["title"] or "",
                      r["discipline"] or "", r["scale"] or "", _issue(r),
                      f"{r['confidence']:.2f}",
                      r["source"], r["change"] or "",
                      "review" if r["needs_review"] and r["number"] else "")
    console.print(table)


def _issue(row: dict) -> str:
    """"rev B · 06-26-19" from a row's revision mark and issue date."""
    parts = ([f"rev {row['revision']}"] if row.get("revision") else []) + \
        ([row["issued"]] if row.get("issued") else [])
    return " · ".join(parts)


def _plan_sheets(ctx, plan: jobs_pb2.PlanRef, as_json: bool) -> None:
    try:
        resp = _client(ctx).list_sheets(plan)
    except grpc.RpcError as e:
        fail_rpc(e)
    rows = [{"number": s.sheet.number or None, "title": s.sheet.title or None,
             "discipline": s.sheet.discipline or None, "job_id": s.job_id, "page": s.page,
             "duplicate_number": s.sheet.duplicate_number,
             "versions": [version_json(v) for v in s.versions]} for s in resp.sheets]
    if as_json:
        click.echo(json.dumps({"job_id": resp.job_id, "sheets": rows}, ensure_ascii=False,
                              indent=2))
        return
    table = Table("sheet", "title", "current", "versions (newest first)", "")
    for r in rows:
        versions = "\n".join(
            f"{v['job_id']}:{v['page']} {v['change']}"
            + (f" ({_issue(v)})" if v["revision"] or v["issued"] else "")
            + (f" (by {v['paired_by']})" if v["paired_by"] and v["paired_by"] != "number"
               else "") for v in r["versions"])
        table.add_row(r["number"] or "-", r["title"] or "", f"{r['job_id']}:{r['page']}",
                      versions, "same number twice" if r["duplicate_number"] else "")
    console.print(table)


for _command in entry_points(group="planzoom.commands"):
    main.add_command(_command.load(), _command.name)


if __name__ == "__main__":
    main()
