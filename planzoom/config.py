"""Configuration from environment variables (prefix ``PLANZOOM_``).

Every setting is documented in docs/configuration.md; flags of the
CLI mirror them. S3 credentials come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) that boto3 reads itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All planzoom settings; each field maps to ``PLANZOOM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PLANZOOM_", extra="ignore")

    # Infrastructure
    #: One NATS server, or several of one cluster separated by commas
    #: (``nats://n1:4222,nats://n2:4222``): a client moves to another when
    #: its server goes away.
    nats_url: str = "nats://127.0.0.1:4222"
    #: Copies JetStream keeps of each stream, durable consumer and KV bucket:
    #: 1 on a single server; 3 (or 5) on a cluster of at least as many
    #: servers, so losing one server (and its volume) loses nothing.
    nats_replicas: int = 1
    nats_creds_file: str | None = None  # NATS credentials file (JWT + nkey seed), or
    nats_user: str | None = None  # a user and password (planzoom.messaging.permissions)
    nats_password: str | None = None
    #: Create or update streams, consumers and the KV bucket at start. Off
    #: where services run with least-privilege users and
    #: ``python -m planzoom.messaging.setup`` has done it once.
    nats_setup: bool = True
    s3_endpoint_url: str | None = None  # None = AWS S3
    s3_region: str = "us-east-1"
    s3_bucket: str = "planzoom"
    s3_create_bucket: bool = True  # create the bucket at startup if missing
    s3_max_connections: int = Field(64, ge=1)

    # gRPC listen / connect addresses (host:port)
    ingest_addr: str = "127.0.0.1:50051"
    progress_addr: str = "127.0.0.1:50052"
    render_addr: str = "127.0.0.1:50053"  # health only
    tile_addr: str = "127.0.0.1:50054"  # health only
    transcode_addr: str = "127.0.0.1:50055"  # health only
    #: host:port of a plaintext listener serving only grpc.health.v1 (kubelet
    #: gRPC probes cannot speak TLS); None = health on the service's port only.
    health_addr: str | None = None
    grpc_grace_seconds: float = Field(10.0, ge=0)
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics; 0 = off
    grpc_reflection: bool = False  # gRPC server reflection (for grpcurl), off unless enabled
    #: Largest message a server accepts: a 4 MiB upload chunk plus its framing.
    grpc_max_receive_bytes: int = Field(4 * 1024 * 1024 + 64 * 1024, ge=64 * 1024)
    tls_cert_file: str | None = None  # PEM certificate chain: servers speak TLS when set
    tls_key_file: str | None = None  # its PEM private key
    tls_ca_file: str | None = None  # clients: CA bundle that signs the servers' certificates

    # Identity (planzoom.auth): who issues bearer tokens, and with which keys
    auth_issuer: str = "planzoom"  # required "iss" claim
    auth_audience: str = "planzoom"  # required "aud" claim
    auth_algorithm: Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384",
                            "EdDSA"] = "RS256"  # the only algorithm accepted
    auth_public_key_file: str | None = None  # the issuer's PEM public key, or
    auth_jwks: str | None = None  # its JWKS: a file path or an https:// URL
    auth_jwks_cooldown_seconds: float = Field(30.0, gt=0)  # least time between two JWKS fetches
    auth_max_token_seconds: float = Field(86400.0, gt=0)  # longest validity accepted (exp - iat)

    # Ingest limits
    max_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1)  # 1 GiB
    max_pages: int = Field(2000, ge=1)
    upload_url_expiry_seconds: int = Field(3600, ge=60)
    upload_idle_seconds: float = Field(30.0, gt=0)  # an upload stream silent this long ends
    max_concurrent_uploads: int = Field(16, ge=1)  # uploads spooling at once per ingest replica
    max_concurrent_uploads_per_org: int = Field(4, ge=1)  # of those, at most this many per org
    max_watches: int = Field(2000, ge=1)  # WatchJob streams open at once per progress replica
    max_watches_per_org: int = Field(500, ge=1)  # of those, per org
    max_watches_per_caller: int = Field(50, ge=1)  # of those, per token subject

    # Job defaults (each one a per-job option)
    default_dpi: float = Field(300.0, gt=0)
    default_tile_size: int = Field(256, ge=1)
    default_overlap: int = Field(1, ge=0)
    default_jpeg_quality: int = Field(90, ge=1, le=100)
    default_layout: Literal["files", "archive"] = "files"  # a job's PyramidLayout if unset
    max_page_pixels: int = Field(400_000_000, ge=1)  # per page, width x height
    max_page_side_pixels: int = Field(65536, ge=256)  # longest side of a page raster
    #: An image page with more pixels (from its header) is refused undecoded.
    max_image_pixels: int = Field(200_000_000, ge=1)
    max_tiff_directories: int = Field(1000, ge=1)  # a TIFF's directories, pages or not
    # Videos: size, length and frame size, checked by probing before any transcode
    max_video_bytes: int = Field(5 * 1024**3, ge=1)
    max_video_seconds: float = Field(3600.0, gt=0)
    max_video_pixels: int = Field(4096 * 2304, ge=1)  # per frame
    transcode_concurrency: int = Field(1, ge=1, le=3)  # videos at once per transcode replica
    #: Wall-clock seconds a transcode may take per second of video (plus a minute).
    transcode_seconds_per_second: float = Field(20.0, gt=0)

    # Work budget of one job, checked before it is accepted: 500 sheets of
    # 36 x 48 in at 300 DPI (78 gigapixels, about 1.6 million tiles) pass.
    max_job_pixels: int = Field(100_000_000_000, ge=1)
    max_job_tiles: int = Field(2_500_000, ge=1)
    # Per-org quotas: beyond them a new job waits, queued, until one ends.
    org_max_jobs_in_flight: int = Field(10, ge=1)
    org_max_pixels_in_flight: int = Field(200_000_000_000, ge=1)
    org_max_pages_in_flight: int = Field(64, ge=1)  # per stage (render, tile)
    #: Bytes an org may hold staged (presigned and tus uploads not yet
    #: submitted) at once, reserved at their declared size or their limit.
    org_max_staged_bytes: int = Field(32 * 1024**3, ge=1)
    org_max_staged_uploads: int = Field(200, ge=1)

    # Workers
    render_concurrency: int = Field(1, ge=1)  # PDFium processes
    render_timeout_seconds: float = Field(600.0, gt=0)  # one page in PDFium, worker time
    inspect_workers: int = Field(2, ge=1)  # PDFium processes of an ingest replica
    inspect_timeout_seconds: float = Field(60.0, gt=0)  # opening one upload, worker time
    inspect_queue_seconds: float = Field(30.0, gt=0)  # wait for a free one before "busy"
    worker_memory_bytes: int = Field(4 * 1024**3, ge=0)  # address space of a worker; 0 = none
    render_band_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    render_recycle_pages: int = Field(50, ge=1)  # restart a PDFium process after N pages
    tile_concurrency: int = Field(1, ge=1)  # pages tiled at once per replica
    tile_put_concurrency: int = Field(32, ge=1)  # tile PUTs in flight per tile worker
    tile_put_processes: int = Field(2, ge=1)  # processes sharing them (a PUT costs GIL time)
    tile_put_timeout_seconds: float = Field(120.0, gt=0)  # one tile's PUT, retries included
    # layout ARCHIVE: a page's archive goes out in parts of this many bytes
    # (S3 takes 5 MiB at least; a smaller pyramid is one PUT)
    archive_part_bytes: int = Field(32 * 1024 * 1024, ge=5 * 1024 * 1024)
    tile_timeout_seconds: float = Field(1800.0, gt=0)  # one page in the tile stage
    ack_wait_seconds: float = Field(60.0, gt=1)
    max_deliver: int = Field(5, ge=1)
    work_dir: str | None = None  # temp files; default: the system temp dir
    #: Bytes the scratch volume at work_dir holds (a Kubernetes emptyDir's
    #: sizeLimit, which statvfs cannot see), as bytes or a Kubernetes
    #: quantity ("4Gi"); 0: only the file system's free space counts.
    scratch_bytes: int = Field(0, ge=0)
    #: Signs the grants of the work handed to render, tile and transcode
    #: (planzoom.grants); ingest and progress need the same key, the stages
    #: none. Unset: progress does not check reports against grants.
    work_grant_key: str | None = None

    # Progress service
    job_retention_seconds: float = Field(24 * 3600, gt=0)  # ended jobs stay in KV this long
    stall_seconds: float = Field(600.0, gt=0)  # no report this long: the job is "stalled"
    sweep_seconds: float = Field(60.0, gt=0)  # reconcile + stall check period

    # HTTP gateway (services/gateway)
    gateway_addr: str = "127.0.0.1:8080"  # host:port it listens on
    #: Signs the gateway's short-lived links (tiles, downloads) for clients
    #: that cannot send a bearer token. Every replica needs the same key;
    #: unset, each process makes its own (links then work only on it).
    gateway_signing_key: str | None = None
    gateway_link_seconds: int = Field(900, ge=10, le=7 * 24 * 3600)  # lifetime of a signed link
    gateway_cors_origins: list[str] = ["*"]  # origins whose pages may call the API
    gateway_rate_per_second: int = Field(200, ge=1)  # requests per second per caller
    grpc_rate_per_second: int = Field(200, ge=1)  # RPCs per second per caller, per server
    gateway_max_body_bytes: int = Field(64 * 1024, ge=1024)  # JSON request bodies
    #: Tiles answered with a redirect to a presigned S3 GET instead of the bytes.
    gateway_tile_redirect: bool = False
    gateway_cache_seconds: int = Field(365 * 24 * 3600, ge=0)  # max-age of tiles and .dzi
    gateway_archives: int = Field(1024, ge=1)  # archives whose directories are kept
    gateway_tile_cache_bytes: int = Field(256 * 1024 * 1024, ge=0)  # archive tiles kept
    # tus uploads: S3 multipart parts (S3 takes 5 MiB to 5 GiB, the last smaller)
    gateway_upload_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    gateway_upload_expiry_seconds: int = Field(24 * 3600, ge=1)  # unfinished uploads removed after
    gateway_max_concurrent_patches: int = Field(16, ge=1)  # PATCH bodies at once (a part each)
    gateway_max_concurrent_patches_per_org: int = Field(4, ge=1)  # of those, one org's
    gateway_patch_idle_seconds: float = Field(30.0, gt=0)  # a PATCH body silent this long is cut
    # Zip downloads: each file listed costs the gateway about 1 KiB while its zip is sent
    gateway_max_zip_entries: int = Field(100_000, ge=10)  # files in one zip
    gateway_max_concurrent_zips: int = Field(4, ge=1)  # zips listed or sent at once
    gateway_max_concurrent_zips_per_org: int = Field(2, ge=1)  # of those, one org's
    # IIIF Image API (services/gateway/iiif): info.json's limits, pixels; regions
    # cut at once per gateway (one org at most half of them, running or waiting)
    iiif_max_width: int = Field(10_000, ge=1)
    iiif_max_height: int = Field(10_000, ge=1)
    iiif_max_area: int = Field(25_000_000, ge=1)
    iiif_max_concurrent_regions: int = Field(4, ge=1)
    iiif_max_waiting_regions: int = Field(16, ge=0)
    iiif_region_wait_seconds: float = Field(10.0, gt=0)  # longest wait before 503
    iiif_quality: int = Field(90, ge=1, le=100)  # JPEG and WebP quality of cut images
    # Webhooks: deliveries tried this often, waiting retry, 2 x retry, ... up to max
    webhook_max_attempts: int = Field(12, ge=1)
    webhook_retry_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0)  # one delivery, connect to last byte
    webhook_max_endpoints: int = Field(16, ge=1)  # per org
    webhook_workers: int = Field(8, ge=0)  # deliveries at once per gateway replica; 0 = none
    webhook_org_in_flight: int = Field(50, ge=1)  # an org's deliveries in flight or backing off
    #: Endpoints on loopback, private, link-local or reserved addresses are
    #: refused (SSRF) unless this is set.
    webhook_allow_private: bool = False

    log_level: str = "INFO"

    @field_validator("nats_replicas")
    @classmethod
    def _odd_replicas(cls, value: int) -> int:
        if value not in (1, 3, 5):
            raise ValueError("JetStream keeps 1, 3 or 5 replicas")
        return value

    @property
    def nats_servers(self) -> list[str]:
        """The server URLs of ``nats_url`` (one, or several separated by commas)."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @field_validator("scratch_bytes", mode="before")
    @classmethod
    def _quantity(cls, value):
        return quantity_bytes(value) if isinstance(value, str) else value

    @property
    def largest_upload_bytes(self) -> int:
        """The largest file any kind may be (a video's limit, or the others')."""
        return max(self.max_upload_bytes, self.max_video_bytes)


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def quantity_bytes(text: str) -> int:
    """Bytes of a Kubernetes quantity ("4Gi", "500M", "1024"). Raises
    ValueError for anything else."""
    text = text.strip()
    for suffix, factor in _SUFFIXES.items():
        if text.endswith(suffix) and text[:-len(suffix)].isdigit():
            return int(text[:-len(suffix)]) * factor
    if text.isdigit():
        return int(text)
    raise ValueError(f"{text!r} is not a size in bytes or a quantity such as 4Gi or 500M")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
