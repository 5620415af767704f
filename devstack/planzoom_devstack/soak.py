"""``python -m planzoom_devstack.soak --duration SECONDS``: a bounded soak of
an embedded stack on 127.0.0.1 under chaos (``make soak``).

For ``--duration`` seconds, PDF jobs from the corpus (small sets at low
DPI, so that many end) are submitted for several orgs, some twice at once,
each followed by a WatchJob watcher, every other one in layout ARCHIVE;
meanwhile a chaos loop, at random intervals, SIGKILLs a render, tile or
progress process (and starts it again), restarts NATS, restarts the S3
store (SeaweedFS), or turns S3 faults on for a while (throttling and reset
connections, through the fault proxy). Then the chaos stops and every job
is given ``--grace`` seconds to end.

With ``--nats-cluster 3`` NATS is a JetStream cluster of three servers
(streams, consumers and KV buckets at three replicas), and the chaos also
SIGKILLs one of the three at random and starts it again a few seconds
later ("kill nats node", about two faults in five); "restart nats"
restarts all three.

Printed at the end, each a count that must be zero:

- not ended: jobs that have not ended;
- failed: jobs that ended FAILED or CANCELLED (the faults are transient);
- pages lost or twice: jobs whose counted pages differ from their DONE
  pages, or whose completion marks in S3 (``.dzi`` files, or archives in
  layout ARCHIVE) differ from their pages;
- duplicates: identical submits that got two different jobs;
- stalled: jobs flagged stalled at the end;
- went backwards: watchers that saw a revision or a page count go down;
- internal errors: submits answered INTERNAL (a refusal while something
  restarts must be UNAVAILABLE, which clients retry);
- memory grew: services the chaos does not restart (ingest, the gateway)
  whose RSS at the end is over twice, and 100 MiB over, what it was after
  the first minute.

Any non-zero count makes the exit status 1. The seed (``--seed``) makes the
chaos repeatable.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from planzoom import keys
from planzoom.states import ended
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_devstack.faultproxy import FaultProxy
from planzoom_devstack.stack import EmbeddedStack, Ports

CORPUS = Path(os.environ.get("PLANZOOM_CORPUS",
                             Path(__file__).resolve().parents[3] / "shared" / "corpus"))
#: (file, DPI): sets that end in seconds, so a few minutes see many.
SETS = [("arch-renovation-plans-7p-a4-affinity-latirasse.pdf", 30),
        ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 40),
        ("scanned-4p-four-orientations-ocrmypdf-cardinal.pdf", 40),
        ("arch-floorplan-70x45cm-archicad-atriumhouse.pdf", 40)]
ORGS = ("north", "south", "east")
CHAOS = ("kill render", "kill tile", "kill progress", "restart nats", "restart s3",
         "s3 faults")
#: With a NATS cluster, the share of faults that SIGKILL one of its servers
#: (the others are drawn from CHAOS as without one).
NODE_KILL_SHARE = 0.4
#: A submit's layout, in turn.
LAYOUTS = (jobs_pb2.PYRAMID_LAYOUT_FILES, jobs_pb2.PYRAMID_LAYOUT_ARCHIVE)


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


class Soak:
    def __init__(self, stack: EmbeddedStack, proxy: FaultProxy, corpus: Path, seed: int):
        self.stack, self.proxy, self.corpus = stack, proxy, corpus
        self.rng = random.Random(seed)
        self.clients = {org: Client(stack.addrs["ingest"], stack.addrs["progress"],
                                    token=stack.token(org, "admin", ttl=24 * 3600))
                        for org in ORGS}
        self.jobs: dict[str, str] = {}  # job id → org
        self.duplicates = 0
        self.internal = 0
        self.backwards = 0
        self.chaos = Counter()
        self.lock = threading.Lock()
        self.watchers: list[threading.Thread] = []
        self.stop = threading.Event()

    def _watch(self, org: str, job_id: str) -> None:
        last = (0, 0)
        try:
            for job in self.clients[org].follow(job_id, give_up_after=600):
                seen = (job.revision, job.completed_pages + job.failed_pages)
                if seen[0] < last[0] or seen[1] < last[1]:
                    with self.lock:
                        self.backwards += 1
                last = seen
        except Exception as e:  # a watcher that gave up is reported by the final check
            print(f"watcher of {job_id} ended: {e}", file=sys.stderr)

    def _submit(self, n: int) -> None:
        org = ORGS[n % len(ORGS)]
        name, dpi = self.rng.choice(SETS)
        plan = jobs_pb2.PlanRef(org=org, project="soak", plan=f"p{n}")
        twice = self.rng.random() < 0.2
        with ThreadPoolExecutor(2) as pool:
            options = jobs_pb2.JobOptions(dpi=dpi, layout=LAYOUTS[n % len(LAYOUTS)])
            futures = [pool.submit(self.clients[org].submit, str(self.corpus / name), plan,
                                   options) for _ in range(2 if twice else 1)]
            replies = []
            for f in futures:
                try:
                    replies.append(f.result())
                except Exception as e:  # a restart under way: not submitted
                    print(f"submit {plan.plan} refused: {e}", file=sys.stderr)
                    if getattr(e, "code", lambda: None)() == grpc.StatusCode.INTERNAL:
                        self.internal += 1
                        self._explain(e.details() or "")
        if len({r.job_id for r in replies}) > 1:
            self.duplicates += 1
        for reply in replies[:1]:
            self.jobs[reply.job_id] = org
            watcher = threading.Thread(target=self._watch, args=(org, reply.job_id), daemon=True)
            watcher.start()
            self.watchers.append(watcher)

    def _explain(self, details: str) -> None:
        """Print the service log's record of an INTERNAL answer (its error id)."""
        match = re.search(r"error id ([0-9a-f]+)", details)
        if not match:
            return
        for log in sorted(self.stack.log_dir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if match.group(1) in line:
                    print(f"  {log.stem}: {line[:4000]}", file=sys.stderr)

    def _chaos(self) -> None:
        cluster = self.stack.nats_cluster > 1
        while not self.stop.wait(self.rng.uniform(5, 15)):
            what = "kill nats node" if cluster and self.rng.random() < NODE_KILL_SHARE \
                else self.rng.choice(CHAOS)
            self.chaos[what] += 1
            print(f"chaos: {what}", file=sys.stderr)
            if what == "kill nats node":
                node = self.rng.randint(1, self.stack.nats_cluster)
                print(f"chaos: SIGKILL NATS server {node}", file=sys.stderr)
                self.stack.kill_nats_node(node)
                self.stop.wait(self.rng.uniform(2, 6))
                self.stack.restart_nats_node(node)
            elif what.startswith("kill "):
                name = what.split()[1]
                self.stack.kill(name)
                self.stack.start_service(name)
            elif what == "restart nats":
                self.stack.restart_nats(down_seconds=1.0)
            elif what == "restart s3":
                self.stack.restart_s3(down_seconds=1.0)
            else:
                self.proxy.slowdown, self.proxy.reset = 0.1, 0.05
                self.stop.wait(self.rng.uniform(3, 8))
                self.proxy.slowdown = self.proxy.reset = 0.0

    def run(self, duration: float, grace: float) -> dict[str, int]:
        baseline: dict[str, int] = {}
        chaos = threading.Thread(target=self._chaos, daemon=True)
        chaos.start()
        started, n = time.monotonic(), 0
        while time.monotonic() - started < duration:
            self._submit(n)
            n += 1
            if not baseline and time.monotonic() - started > min(60, duration / 2):
                baseline = {name: _rss_kib(p.pid) for name, p in self.stack.procs.items()}
            time.sleep(self.rng.uniform(0.5, 2.0))
        self.stop.set()
        chaos.join()
        self.proxy.slowdown = self.proxy.reset = 0.0
        deadline = time.monotonic() + grace
        for watcher in self.watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))
        return self._verdict(baseline, n)

    def _get_job(self, org: str, job_id: str, patience: float = 60.0) -> jobs_pb2.Job:
        """The job's record, asked again while the answer is UNAVAILABLE (as
        any client does): right after the chaos, a stream whose leader went
        with a killed NATS server may still be electing a new one."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return self.clients[org].get_job(job_id)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _verdict(self, baseline: dict[str, int], submitted: int) -> dict[str, int]:
        import boto3

        env = self.stack.env()
        s3 = boto3.client("s3", endpoint_url=self.stack.s3_endpoint,
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name="us-east-1")
        counts = Counter()
        for job_id, org in self.jobs.items():
            job = self._get_job(org, job_id)
            if not ended(job):
                counts["not ended"] += 1
                continue
            if job.state != jobs_pb2.JOB_STATE_COMPLETE:
                counts["failed"] += 1
            done = sum(p.state == jobs_pb2.PAGE_STATE_DONE for p in job.pages)
            listed = s3.list_objects_v2(Bucket=self.stack.bucket, Prefix=job.tiles_prefix,
                                        Delimiter="/").get("Contents", [])
            marks = sum(o["Key"].endswith((".dzi", f".{keys.ARCHIVE_SUFFIX}")) for o in listed)
            if done != job.completed_pages or marks != done or \
                    job.completed_pages + job.failed_pages != job.total_pages:
                counts["pages lost or twice"] += 1
            if job.stalled:
                counts["stalled"] += 1
        counts["duplicates"] = self.duplicates
        counts["internal errors"] = self.internal
        counts["went backwards"] = self.backwards
        grew = [name for name, before in baseline.items()
                if name in ("ingest", "gateway") and before
                and (after := _rss_kib(self.stack.procs[name].pid)) > 2 * before
                and after - before > 100 * 1024]
        counts["memory grew"] = len(grew)
        print(f"\njobs: {len(self.jobs)} of {submitted} submits; chaos: {dict(self.chaos)}")
        print("RSS MiB after warm-up → end: " + ", ".join(
            f"{n} {b // 1024}→{_rss_kib(self.stack.procs[n].pid) // 1024}"
            for n, b in sorted(baseline.items()) if n in self.stack.procs))
        return {k: counts[k] for k in ("not ended", "failed", "pages lost or twice",
                                        "duplicates", "stalled", "went backwards",
                                        "internal errors", "memory grew")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos")
    parser.add_argument("--grace", type=float, default=300.0,
                        help="seconds the jobs get to end afterwards")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--nats-cluster", type=int, choices=(1, 3), default=1,
                        help="NATS servers: 3 run as one JetStream cluster, and the chaos "
                             "kills one of them at times")
    args = parser.parse_args()
    ports = Ports.free()
    proxy = FaultProxy(f"http://127.0.0.1:{ports.s3}").start()
    with tempfile.TemporaryDirectory(prefix="planzoom-soak-") as tmp:
        stack = EmbeddedStack(data_dir=Path(tmp), ports=ports, tile_workers=2,
                              nats_cluster=args.nats_cluster, extra_env={
            "PLANZOOM_S3_ENDPOINT_URL": proxy.url, "PLANZOOM_ACK_WAIT_SECONDS": "10",
            "PLANZOOM_SWEEP_SECONDS": "5", "PLANZOOM_STALL_SECONDS": "60"})
        stack.start()
        try:
            counts = Soak(stack, proxy, args.corpus, args.seed).run(args.duration, args.grace)
        finally:
            stack.stop()
            proxy.stop()
    width = max(map(len, counts))
    for name, value in counts.items():
        print(f"{name:<{width}}  {value}")
    sys.exit(1 if any(counts.values()) else 0)


if __name__ == "__main__":
    main()
