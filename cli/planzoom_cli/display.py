"""What the CLI shows in a terminal: a live progress bar fed by WatchJob and
the job record as a table (rich)."""

from __future__ import annotations

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from planzoom.states import job_state_name, page_state_name
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client, stage_summary

console = Console()
err_console = Console(stderr=True)


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
            # percent counts a page's own progress too (a video's transcode)
            bar.update(task, total=100.0, completed=job.percent,
                       state=job_state_name(job.state),
                       stage=stage_summary(job) + (" · STALLED" if job.stalled else ""),
                       pages=f"{job.completed_pages}/{job.total_pages} pages")
            final = job
    return final


def print_job(job: jobs_pb2.Job) -> None:
    """The job's state, then one row per page: size in points, DPI, pixels,
    levels, tiles, state, and the .dzi name or the page's error."""
    console.print(f"job [bold]{job.job_id}[/bold]  {job_state_name(job.state)}  "
                  f"{job.completed_pages}/{job.total_pages} pages done  "
                  f"({job.percent:.0f} %)  source sha256 {job.source_sha256[:16]}…")
    table = Table("page", "size (pt)", "DPI", "pixels", "levels", "tiles", "state", "DZI / error")
    for p in job.pages:
        table.add_row(
            str(p.page), f"{p.width_pt:.0f} x {p.height_pt:.0f}", f"{p.dpi:g}" if p.dpi else "",
            f"{p.width_px} x {p.height_px}" if p.width_px else "", str(p.levels or ""),
            str(p.tile_count or ""), page_state_name(p.state),
            p.error or p.dzi_key.rsplit("/", 1)[-1] or p.video.master_key.rsplit("/", 2)[-1],
        )
    console.print(table)
    if job.state == jobs_pb2.JOB_STATE_COMPLETE:
        master = job.pages[0].video.master_key if job.pages else ""
        if master:
            console.print(f"HLS preview: {master} (manifest.json under {job.tiles_prefix})")
        else:
            console.print(f"DZI files under {job.tiles_prefix} (manifest.json beside them)")
