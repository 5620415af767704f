"""``planzoom up`` and ``planzoom demo``: the embedded stack from the CLI.

Registered as ``planzoom`` commands through the ``planzoom.commands``
entry-point group, so the CLI itself does not depend on the stack.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import click
import grpc
import httpx
from rich.table import Table

from planzoom.auth import ROLES
from planzoom.states import job_state_name
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_cli.display import console, err_console, print_job, watch_job
from planzoom_cli.main import exit_unless_complete, fail_rpc, job_options, options_from_flags
from planzoom_devstack.export import export_job
from planzoom_devstack.issuer import DevIssuer
from planzoom_devstack.stack import EmbeddedStack, Ports, StackError

tile_workers_option = click.option(
    "--tile-workers", type=click.IntRange(min=1), default=1, show_default=True,
    help="Tile workers, each using up to about two CPU cores (it and its upload "
         "processes).")


def start_stack(data_dir: Path | None, tile_workers: int,
                ports: Ports | None = None, nats_cluster: int = 1) -> EmbeddedStack:
    """Start the embedded stack in ``data_dir`` (default: a new temp dir) on
    ``ports`` (default: the documented fixed ones), with ``nats_cluster``
    NATS servers; exit with status 2, saying which part failed, if it does
    not come up."""
    data = data_dir or Path(tempfile.mkdtemp(prefix="planzoom-stack-"))
    stack = EmbeddedStack(data_dir=data, tile_workers=tile_workers, ports=ports or Ports(),
                          nats_cluster=nats_cluster)
    with console.status("starting NATS JetStream, the S3 endpoint and the four services…"):
        try:
            stack.start()
        except StackError as e:
            err_console.print(f"[red]the embedded stack did not start:[/red] {e}")
            sys.exit(2)
    return stack


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="JetStream store, S3 data and logs (default: a new temp dir).")
@tile_workers_option
@click.option("--nats-cluster", type=click.Choice(["1", "3", "5"]), default="1",
              show_default=True,
              help="NATS servers: 3 or 5 run as one JetStream cluster that keeps every "
                   "stream and KV bucket on each, so losing a server loses nothing.")
def up(data_dir, tile_workers, nats_cluster):
    """Run the embedded stack on 127.0.0.1 until Ctrl-C."""
    stack = start_stack(data_dir, tile_workers, nats_cluster=int(nats_cluster))
    env = stack.env()
    table = Table("part", "address")
    nats = "NATS JetStream" if stack.nats_cluster == 1 else \
        f"NATS JetStream (cluster of {stack.nats_cluster}, replicas {stack.nats_cluster})"
    table.add_row(nats, env["PLANZOOM_NATS_URL"])
    table.add_row("S3 endpoint (bucket planzoom)", env["PLANZOOM_S3_ENDPOINT_URL"])
    for name in ("ingest", "progress", "render", "tile", "transcode"):
        table.add_row(f"{name} (gRPC)", env[f"PLANZOOM_{name.upper()}_ADDR"])
    table.add_row("gateway (HTTP API, /docs)", stack.gateway_url)
    console.print(table)
    console.print(f"logs in {stack.log_dir}; try:\n"
                  "  export PLANZOOM_TOKEN=$(planzoom token --org o)\n"
                  "  planzoom submit PLAN.pdf --org o --project p --plan l --watch\n"
                  f"then view it: {stack.gateway_url}/view/JOB_ID#token=$PLANZOOM_TOKEN")
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


def iiif_manifest_url(stack: EmbeddedStack, job_id: str, org: str) -> str:
    """The job's IIIF manifest in the form that needs no header: its
    signed link (the gateway's ``GET /v1/jobs/{id}/links``) in the path
    (docs/iiif.md)."""
    links = httpx.get(f"{stack.gateway_url}/v1/jobs/{job_id}/links", timeout=30,
                      headers={"Authorization": f"Bearer {stack.token(org, 'viewer')}"})
    links.raise_for_status()
    return f"{stack.gateway_url}/iiif/3/cap/{links.json()['cap']}/jobs/{job_id}/manifest"


@click.command()
@click.argument("pdf", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("planzoom-output"), show_default=True,
              help="Folder the finished job is exported to.")
@job_options
@tile_workers_option
def demo(pdf, out, dpi, tile_size, overlap, quality, layout, tile_workers):
    """Start the embedded stack, convert PDF, export the result, stop.
    Each page's pyramid is one archive unless --layout files."""
    layout = layout or "archive"
    plan_id = re.sub(r"[^A-Za-z0-9_-]", "-", pdf.stem)[:64].strip("-_") or "plan"
    plan = jobs_pb2.PlanRef(org="demo", project="demo", plan=plan_id)
    started = time.monotonic()
    # Ports nobody listens on: the demo's result is the exported folder, so
    # it need not collide with a `planzoom up` already running.
    stack = start_stack(None, tile_workers, Ports.free())
    env = stack.env()
    client = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"],
                    token=stack.token(plan.org, "uploader"))
    try:
        console.print(f"stack up in {time.monotonic() - started:.1f} s; submitting {pdf}")
        t0 = time.monotonic()
        resp = client.submit(str(pdf), plan, options_from_flags(dpi, tile_size, overlap,
                                                                quality, layout))
        console.print(f"job {resp.job_id}: {resp.job.total_pages} pages, "
                      f"{resp.job.source_bytes:,} bytes; watch it live (while the demo "
                      f"runs): {stack.gateway_url}/view/{resp.job_id}"
                      f"#token={stack.token(plan.org, 'viewer')}", soft_wrap=True)
        manifest = iiif_manifest_url(stack, resp.job_id, plan.org)
        console.print(f"its IIIF manifest, for any IIIF viewer, no token needed (once the "
                      f"job has ended, while the demo runs): {manifest}\nin Mirador: "
                      f"{stack.gateway_url}/iiif/3/mirador/view?manifest="
                      f"{quote(manifest, safe='')}", soft_wrap=True)
        job = watch_job(client, resp.job_id)
        wall = time.monotonic() - t0
        print_job(job)
        page, files = export_job(stack, job, out)
        tiles = sum(p.tile_count for p in job.pages)
        mpx = sum(p.width_px * p.height_px for p in job.pages) / 1e6
        console.print(
            f"{job.total_pages} pages, {mpx:.1f} megapixels, {tiles:,} tiles in {wall:.1f} s "
            f"(submit → {job_state_name(job.state)})")
        unpacked = " (unpacked from the archives: a browser opens them from disk)" \
            if layout == "archive" else ""
        console.print(f"exported {files:,} files to [bold]{out}[/bold]: the offline viewer "
                      f"(index.html, static/) and {job.job_id}/ (manifest.json, page-N.dzi, "
                      f"page-N_files/{unpacked}, thumbnails)")
        console.print(f"open the plan set in a browser: [bold]{page.resolve().as_uri()}[/bold]")
    except grpc.RpcError as e:
        fail_rpc(e)
    finally:
        client.close()
        with console.status("stopping the stack…"):
            stack.stop()
    exit_unless_complete(job)


@click.command()
@click.option("--org", required=True, help="Organisation the token acts for.")
@click.option("--role", type=click.Choice(ROLES), default="uploader", show_default=True,
              help="viewer: read and watch jobs; uploader: also submit; admin: also "
                   "cancel and reconcile.")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Seconds until the token expires.")
@click.option("--subject", default=None, help="The token's 'sub' (default dev:ORG:ROLE).")
def token(org, role, ttl, subject):
    """Print a token for a stack started with 'planzoom up' from this checkout."""
    try:
        print(DevIssuer().mint(org, role, ttl, subject))
    except ValueError as e:
        err_console.print(f"[red]error:[/red] {e}")
        sys.exit(2)
