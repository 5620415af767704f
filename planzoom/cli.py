"""``planzoom``: the command-line client and the embedded stack.

Client commands (submit, status, watch, jobs) talk to the services over gRPC
only, at PLANZOOM_INGEST_ADDR and PLANZOOM_PROGRESS_ADDR (or the flags).
Exit codes: 0 success, 1 the job FAILED or was CANCELLED, 2 a request was
refused or a service could not be reached.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from planzoom.client import PAGE_STATE_NAMES, STATE_NAMES, TERMINAL, Client, stage_summary
from planzoom.config import get_settings
from planzoom.v1 import jobs_pb2

console = Console()
err_console = Console(stderr=True)


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["ingest_addr"], ctx.obj["progress_addr"])


def _fail_rpc(e: grpc.RpcError) -> None:
    err_console.print(f"[red]error:[/red] {e.code().name}: {e.details()}")
    sys.exit(2)


@click.group()
@click.option("--ingest-addr", envvar="PLANZOOM_INGEST_ADDR",
              default=lambda: get_settings().ingest_addr, show_default="127.0.0.1:50051",
              help="IngestService host:port (PLANZOOM_INGEST_ADDR).")
@click.option("--progress-addr", envvar="PLANZOOM_PROGRESS_ADDR",
              default=lambda: get_settings().progress_addr, show_default="127.0.0.1:50052",
              help="ProgressService host:port (PLANZOOM_PROGRESS_ADDR).")
@click.pass_context
def main(ctx: click.Context, ingest_addr: str, progress_addr: str) -> None:
    """planzoom: construction-plan PDFs to Deep Zoom Image tile pyramids."""
    ctx.obj = {"ingest_addr": ingest_addr, "progress_addr": progress_addr}


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
    ]):
        f = opt(f)
    return f


def _options(dpi, tile_size, overlap, quality) -> jobs_pb2.JobOptions:
    o = jobs_pb2.JobOptions(dpi=dpi, tile_size=tile_size, jpeg_quality=quality)
    if overlap is not None:
        o.overlap = overlap
    return o


def watch_job(client: Client, job_id: str) -> jobs_pb2.Job:
    """Show a live progress bar fed by WatchJob; return the final record."""
    final = None
    with Progress(
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.fields[pages]}"),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stage]}"),
        console=console,
    ) as bar:
        task = bar.add_task("job", total=None, state="", stage="", pages="")
        def reconnecting(e: grpc.RpcError) -> None:
            bar.update(task, stage=f"reconnecting ({e.code().name})…")

        for job in client.follow(job_id, on_retry=reconnecting):
            bar.update(task, total=job.total_pages,
                       completed=job.completed_pages + job.failed_pages,
                       state=STATE_NAMES[job.state],
                       stage=stage_summary(job) + (" · STALLED" if job.stalled else ""),
                       pages=f"{job.completed_pages}/{job.total_pages} pages")
            final = job
    return final


def print_job(job: jobs_pb2.Job) -> None:
    console.print(f"job [bold]{job.job_id}[/bold]  {STATE_NAMES[job.state]}  "
                  f"{job.completed_pages}/{job.total_pages} pages done  "
                  f"({job.percent:.0f} %)  source sha256 {job.source_sha256[:16]}…")
    table = Table("page", "size (pt)", "DPI", "pixels", "levels", "tiles", "state", "DZI / error")
    for p in job.pages:
        table.add_row(
            str(p.page), f"{p.width_pt:.0f} x {p.height_pt:.0f}", f"{p.dpi:g}" if p.dpi else "",
            f"{p.width_px} x {p.height_px}" if p.width_px else "", str(p.levels or ""),
            str(p.tile_count or ""), PAGE_STATE_NAMES[p.state],
            p.error or p.dzi_key.rsplit("/", 1)[-1],
        )
    console.print(table)
    if job.state == jobs_pb2.JOB_STATE_COMPLETE:
        console.print(f"DZI files under {job.tiles_prefix} (manifest.json beside them)")


def _end(job: jobs_pb2.Job) -> None:
    if job.state != jobs_pb2.JOB_STATE_COMPLETE:
        err_console.print(f"[red]job {job.job_id} {STATE_NAMES[job.state]}:[/red] {job.error}")
        sys.exit(1)


@main.command()
@click.argument("pdf", type=click.Path(exists=True, dir_okay=False))
@plan_options
@job_options
@click.option("--watch/--no-watch", default=False, help="Follow the job to its end.")
@click.pass_context
def submit(ctx, pdf, org, project, plan_id, dpi, tile_size, overlap, quality, watch):
    """Upload PDF as a new job for ORG/PROJECT/PLAN."""
    client = _client(ctx)
    try:
        resp = client.submit(pdf, jobs_pb2.PlanRef(org=org, project=project, plan=plan_id),
                             _options(dpi, tile_size, overlap, quality))
        note = " (same file and options as an existing job)" if resp.deduplicated else ""
        console.print(f"job {resp.job_id}: {resp.job.total_pages} pages{note}")
        if watch:
            job = watch_job(client, resp.job_id)
            print_job(job)
            _end(job)
    except grpc.RpcError as e:
        _fail_rpc(e)


@main.command()
@click.argument("job_id")
@click.pass_context
def status(ctx, job_id):
    """Print a job's record."""
    try:
        job = _client(ctx).get_job(job_id)
    except grpc.RpcError as e:
        _fail_rpc(e)
    print_job(job)
    if job.state in TERMINAL:
        _end(job)


@main.command()
@click.argument("job_id")
@click.pass_context
def watch(ctx, job_id):
    """Follow a job with a progress bar until it ends."""
    try:
        job = watch_job(_client(ctx), job_id)
    except grpc.RpcError as e:
        _fail_rpc(e)
    print_job(job)
    _end(job)


@main.command()
@click.argument("job_id")
@click.option("--reason", default="", help="Recorded in the job's error.")
@click.pass_context
def cancel(ctx, job_id, reason):
    """Cancel a job that has not ended."""
    try:
        job = _client(ctx).cancel(job_id, reason)
    except grpc.RpcError as e:
        _fail_rpc(e)
    console.print(f"job {job.job_id} {STATE_NAMES[job.state]}")


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
        _fail_rpc(e)
    table = Table("job", "state", "pages", "done", "source")
    for j in found:
        table.add_row(j.job_id, STATE_NAMES[j.state], str(j.total_pages),
                      str(j.completed_pages), j.source_name)
    console.print(table)


@main.command()
@click.argument("service", type=click.Choice(["ingest", "render", "tile", "progress"]))
def serve(service):
    """Run one service against NATS and S3 from the environment."""
    import importlib

    importlib.import_module(f"services.{service}.service").main()


tile_workers_option = click.option(
    "--tile-workers", type=click.IntRange(min=1), default=1, show_default=True,
    help="Tile workers, each using up to about two CPU cores (it and its upload "
         "processes).")


def _start_stack(data_dir: Path | None, tile_workers: int):
    from planzoom.stack import EmbeddedStack, StackError

    data = data_dir or Path(tempfile.mkdtemp(prefix="planzoom-stack-"))
    stack = EmbeddedStack(data_dir=data, tile_workers=tile_workers)
    with console.status("starting NATS JetStream, the S3 endpoint and the four services…"):
        try:
            stack.start()
        except StackError as e:
            err_console.print(f"[red]the embedded stack did not start:[/red] {e}")
            sys.exit(2)
    return stack


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="JetStream store and logs (default: a new temp dir).")
@tile_workers_option
def up(data_dir, tile_workers):
    """Run the embedded stack on 127.0.0.1 until Ctrl-C."""
    stack = _start_stack(data_dir, tile_workers)
    env = stack.env()
    table = Table("part", "address")
    table.add_row("NATS JetStream", env["PLANZOOM_NATS_URL"])
    table.add_row("S3 endpoint (bucket planzoom)", env["PLANZOOM_S3_ENDPOINT_URL"])
    for name in ("ingest", "progress", "render", "tile"):
        table.add_row(f"{name} (gRPC)", env[f"PLANZOOM_{name.upper()}_ADDR"])
    console.print(table)
    console.print(f"logs in {stack.log_dir}; try: planzoom submit PLAN.pdf --org o "
                  "--project p --plan l --watch")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            stack.stop()


def export_job(stack, job: jobs_pb2.Job, out: Path) -> int:
    """Copy the job's tiles, .dzi files and manifest, and the plan's
    current.json, from the stack's S3 endpoint to ``out``, keeping the
    bucket's layout; returns how many files were copied."""
    from concurrent.futures import ThreadPoolExecutor

    from planzoom import keys
    from planzoom.config import Settings
    from planzoom.stack import S3_ACCESS_KEY, S3_SECRET_KEY
    from planzoom.storage import ObjectStore

    store = ObjectStore(Settings(s3_endpoint_url=stack.s3_endpoint, s3_bucket=stack.bucket),
                        credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    wanted = [*store.list_keys(job.tiles_prefix), keys.current_key(job.plan)]

    def fetch(key: str) -> None:
        dest = out / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(store.get_bytes(key))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(fetch, wanted))
    return len(wanted)


@main.command()
@click.argument("pdf", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("planzoom-output"), show_default=True,
              help="Folder the finished job is exported to.")
@job_options
@tile_workers_option
def demo(pdf, out, dpi, tile_size, overlap, quality, tile_workers):
    """Start the embedded stack, convert PDF, export the result, stop.

    PDF defaults to the 8-sheet plan set in ../shared/corpus/.
    """
    if pdf is None:
        pdf = Path("../shared/corpus/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf")
    if not pdf.is_file():
        err_console.print(f"[red]error:[/red] no PDF at {pdf}; pass one: make demo PDF=plan.pdf")
        sys.exit(2)
    plan_id = re.sub(r"[^A-Za-z0-9_-]", "-", pdf.stem)[:64].strip("-_") or "plan"
    plan = jobs_pb2.PlanRef(org="demo", project="demo", plan=plan_id)
    started = time.monotonic()
    stack = _start_stack(None, tile_workers)
    env = stack.env()
    client = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"])
    try:
        console.print(f"stack up in {time.monotonic() - started:.1f} s; submitting {pdf}")
        t0 = time.monotonic()
        resp = client.submit(str(pdf), plan, _options(dpi, tile_size, overlap, quality))
        console.print(f"job {resp.job_id}: {resp.job.total_pages} pages, "
                      f"{resp.job.source_bytes:,} bytes")
        job = watch_job(client, resp.job_id)
        wall = time.monotonic() - t0
        print_job(job)
        files = export_job(stack, job, out)
        tiles = sum(p.tile_count for p in job.pages)
        mpx = sum(p.width_px * p.height_px for p in job.pages) / 1e6
        console.print(
            f"{job.total_pages} pages, {mpx:.1f} megapixels, {tiles:,} tiles in {wall:.1f} s "
            f"(submit → {STATE_NAMES[job.state]})")
        console.print(f"exported {files:,} files to [bold]{out / job.tiles_prefix}[/bold] "
                      f"(manifest.json, page-N.dzi + page-N_files/)")
    except grpc.RpcError as e:
        _fail_rpc(e)
    finally:
        client.close()
        with console.status("stopping the stack…"):
            stack.stop()
    _end(job)


if __name__ == "__main__":
    main()
