"""A thin gRPC client for planzoom (used by the CLI, the embedded stack's
demo, the tests and the benchmark).

Every call passes a deadline. Errors surface as ``grpc.RpcError`` with the
server's status code and message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from planzoom.states import finalized, page_state_name
from planzoom.updates import apply_update
from planzoom.v1 import ingest_pb2, ingest_pb2_grpc, jobs_pb2, progress_pb2, progress_pb2_grpc

CHUNK_BYTES = 1024 * 1024
UPLOAD_TIMEOUT_SECONDS = 3600.0
CALL_TIMEOUT_SECONDS = 30.0

#: Codes after which a broken WatchJob stream is opened again.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


#: How long :meth:`Client.submit` keeps coming back to a busy server.
BUSY_RETRY_SECONDS = 300.0


def _reconnectable(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in RECONNECT_CODES


def _retry_hint(error: BaseException) -> float:
    """Seconds the server asked to wait before trying again (its RetryInfo
    detail), or 0 if it did not ask."""
    if not isinstance(error, grpc.RpcError) or error.code() not in (
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        return 0.0
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return 0.0


def upload_requests(path: str, plan: jobs_pb2.PlanRef, options: jobs_pb2.JobOptions,
                    chunk_bytes: int = CHUNK_BYTES) -> Iterator[ingest_pb2.UploadRequest]:
    """The Upload stream for a local file: header, then chunks."""
    size = os.path.getsize(path)
    yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(
        plan=plan, options=options, filename=os.path.basename(path), size_bytes=size))
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            yield ingest_pb2.UploadRequest(chunk=chunk)


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def channel(addr: str, token: str | None = None, ca_file: str | None = None,
            server_name: str | None = None) -> grpc.Channel:
    """A channel to ``addr`` (host:port): TLS checked against ``ca_file``
    when given, else plaintext; every call carries ``token`` if given.
    ``server_name`` is the name the server's certificate must carry when it
    is not ``addr``'s host (through a port-forward to localhost)."""
    if ca_file:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        with open(ca_file, "rb") as f:
            ch = grpc.secure_channel(addr, grpc.ssl_channel_credentials(f.read()), options)
    else:
        ch = grpc.insecure_channel(addr)
    return grpc.intercept_channel(ch, _BearerToken(token)) if token else ch


class Client:
    """IngestService and ProgressService as one caller: ``token`` (a JWT,
    see planzoom.auth) goes with every call; ``ca_file`` turns on TLS."""

    def __init__(self, ingest_addr: str, progress_addr: str, token: str | None = None,
                 ca_file: str | None = None, server_name: str | None = None):
        self._ingest_ch = channel(ingest_addr, token, ca_file, server_name)
        self._progress_ch = channel(progress_addr, token, ca_file, server_name)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self._ingest_ch)
        self.progress = progress_pb2_grpc.ProgressServiceStub(self._progress_ch)

    def close(self) -> None:
        self._ingest_ch.close()
        self._progress_ch.close()

    def submit(self, path: str, plan: jobs_pb2.PlanRef, options: jobs_pb2.JobOptions,
               busy_for: float = BUSY_RETRY_SECONDS) -> ingest_pb2.SubmitJobResponse:
        """Upload ``path`` as a job. When the server is busy and says when to
        come back (a google.rpc.RetryInfo: too many uploads at once, no free
        worker), try again after that long, for up to ``busy_for`` seconds."""
        for attempt in Retrying(retry=retry_if_exception(_retry_hint),
                                wait=lambda state: _retry_hint(state.outcome.exception()),
                                stop=stop_after_delay(busy_for), reraise=True):
            with attempt:
                return self.ingest.Upload(upload_requests(path, plan, options),
                                          timeout=UPLOAD_TIMEOUT_SECONDS)
        raise AssertionError("unreachable")

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self.progress.GetJob(jobs_pb2.GetJobRequest(job_id=job_id),
                                    timeout=CALL_TIMEOUT_SECONDS)

    def list_sheets(self, plan: jobs_pb2.PlanRef) -> progress_pb2.ListSheetsResponse:
        """The plan's current set with each sheet's versions (ListSheets)."""
        return self.progress.ListSheets(progress_pb2.ListSheetsRequest(plan=plan))

    def list_jobs(self, plan: jobs_pb2.PlanRef, limit: int = 50) -> list[jobs_pb2.Job]:
        """Up to ``limit`` records of the plan, newest first, page by page."""
        jobs, token = [], ""
        while len(jobs) < limit:
            page = self.progress.ListJobs(progress_pb2.ListJobsRequest(
                plan=plan, page_size=min(100, limit - len(jobs)), page_token=token),
                timeout=CALL_TIMEOUT_SECONDS)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
        return jobs

    def watch(self, job_id: str, timeout: float = 24 * 3600) -> Iterator[jobs_pb2.Job]:
        """Whole job records from one WatchJob stream until the final one
        (the job ended, its outputs written): its snapshot, then each delta
        merged into the record before."""
        job = None
        for update in self.progress.WatchJob(progress_pb2.WatchJobRequest(job_id=job_id),
                                             timeout=timeout):
            job = apply_update(job, update)
            yield job

    def follow(self, job_id: str, give_up_after: float = 300.0,
               on_retry=None) -> Iterator[jobs_pb2.Job]:
        """Job records until the final one, across progress-service restarts.

        When the stream breaks (UNAVAILABLE, the connection drops) it watches
        again after an exponential backoff with jitter (0.2 s doubling to 5 s)
        and resumes: records at or below the last revision seen are skipped,
        so the sequence has no step backwards. Gives up when no stream could
        be opened for ``give_up_after`` seconds. ``on_retry(error)`` is called
        before each wait.
        """
        last_revision = 0
        while True:
            received = False  # a record came in this phase: a new break starts afresh
            for attempt in Retrying(
                retry=retry_if_exception(_reconnectable), reraise=True,
                wait=wait_random_exponential(multiplier=0.2, max=5.0),
                stop=stop_after_delay(give_up_after),
                before_sleep=(lambda state: on_retry(state.outcome.exception()))
                if on_retry else None,
            ):
                with attempt:
                    try:
                        for job in self.watch(job_id):
                            received = True
                            if job.revision <= last_revision:
                                continue
                            last_revision = job.revision
                            yield job
                            if finalized(job):
                                return
                        return
                    except grpc.RpcError as e:
                        if not (received and _reconnectable(e)):
                            raise
                        if on_retry:
                            on_retry(e)
                break  # the stream broke after news: watch again with a fresh backoff

    def cancel(self, job_id: str, reason: str = "") -> jobs_pb2.Job:
        return self.progress.CancelJob(
            progress_pb2.CancelJobRequest(job_id=job_id, reason=reason),
            timeout=CALL_TIMEOUT_SECONDS)

    def reconcile(self, job_id: str) -> progress_pb2.ReconcileResponse:
        return self.progress.Reconcile(progress_pb2.ReconcileRequest(job_id=job_id),
                                       timeout=CALL_TIMEOUT_SECONDS)


def stage_summary(job: jobs_pb2.Job) -> str:
    """What the pages are doing, e.g. "rendering 1 · tiling 2 · done 3"."""
    counts: dict[str, int] = {}
    for p in job.pages:
        name = page_state_name(p.state).lower()
        counts[name] = counts.get(name, 0) + 1
    order = ("pending", "rendering", "tiling", "done", "failed")
    return " · ".join(f"{k} {counts[k]}" for k in order if counts.get(k))
