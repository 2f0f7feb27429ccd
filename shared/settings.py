"""One settings object for the service and the workers, read from ``MOFO_*`` environment variables
(or a ``.env`` file), refusing unsafe values at start-up rather than failing later."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mofo.shared.params import CudaKernel, DecodeLimits, FlowBackend

MiB = 1024**2


def masked_url(url: str) -> str:
    """A URL with any password (what lies between ``user:`` and ``@``) shown as ``***``, for
    messages; it needs no valid URL."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}{sep}{user}:***@{host}"


class Settings(BaseSettings):
    """Everything ``mofo serve`` (and later ``mofo worker``) can be told. Defaults need nothing:
    no Redis (an in-process cache and job runner), no data root (uploads only), CPU or GPU as
    found."""

    model_config = SettingsConfigDict(env_prefix="MOFO_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Clips named by path must lie under this folder; unset = path requests are refused.
    data_root: Path | None = None
    # Box cache and job queue; unset = in-process cache and jobs (the embedded default).
    redis_url: str | None = None
    # The job queue's Redis when it is not the cache's (the cache wants persistence, the queue
    # does not need it); unset = redis_url.
    queue_redis_url: str | None = None
    queue_name: str = Field("mofo", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # API jobs
    build_queue: str = Field("mofo-build", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # builds
    device: str = "auto"
    backend: Literal["auto", FlowBackend] = "auto"
    # The torch TV-L1's inner loop on CUDA: hand-written "triton" kernels or the "compiled" step
    # (FlowParams.cuda_kernel of every flow this process computes: its FlowBatcher sets it).
    tvl1_kernel: CudaKernel = "triton"

    # Hard limits, checked while the upload streams (bytes) and from the header (the rest).
    max_upload_bytes: int = Field(256 * MiB, ge=1, le=DecodeLimits.max_bytes)
    max_frames: int = Field(9_000, ge=2, le=DecodeLimits.max_frames)
    max_duration_s: float = Field(600.0, gt=0, le=DecodeLimits.max_duration_s)
    max_width: int = Field(3840, ge=16, le=DecodeLimits.max_width)
    max_height: int = Field(2160, ge=16, le=DecodeLimits.max_height)

    # Request batching: pairs of concurrent requests go into one flow call of at most
    # max_batch_pairs (unset: the device's default batch), waiting at most max_wait_ms for company.
    max_batch_pairs: int | None = Field(None, ge=1, le=512)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    # Requests being worked on at once; one more is answered 429 with Retry-After.
    max_pending: int = Field(32, ge=1, le=4096)
    request_timeout_s: float = Field(120.0, gt=0, le=3600)
    # Frames an interactive request (boxes, motion map, preview) boxes at most, spread over the
    # clip, when it asks for no sampling itself; 0 = every frame. Jobs box every frame.
    interactive_frames: int = Field(64, ge=0, le=100_000)

    cache_entries: int = Field(10_000, ge=1)  # in-process cache size (no Redis)
    # Recent analyses (frames + motion maps) kept so /v1/motion-map and /v1/preview of a clip
    # just boxed need no second flow run.
    recent_bytes: int = Field(256 * MiB, ge=0)
    job_workers: int = Field(1, ge=1, le=64)  # in-process job threads (no Redis)
    job_ttl_s: int = Field(24 * 3600, ge=60)  # how long finished jobs and their results stay
    max_job_clips: int = Field(10_000, ge=1)  # paths in one job
    warmup: bool = True  # run one flow call at start-up; /readyz waits for it

    # Workers (`mofo worker`): clips of a job worked on at once (their flow pairs share batches);
    # a heartbeat every worker_heartbeat_s while a job runs; a job not heard of for
    # worker_abandon_s (its worker was killed) runs again; registries are checked for such jobs
    # and for retries that are due every worker_maintenance_s.
    worker_clip_threads: int = Field(4, ge=1, le=64)
    worker_heartbeat_s: float = Field(10.0, gt=0, le=600)
    worker_abandon_s: int = Field(60, ge=2, le=86_400)
    worker_maintenance_s: int = Field(30, ge=1, le=3600)

    # -- Uploads, job uploads and Redis outages -------------------------------------------------
    # Request bodies being received at once, and the body bytes of all requests in progress
    # (from Content-Length before the body is read, else as it arrives; held until the answer
    # has gone): one more gets 503 with Retry-After. A body must arrive within body_timeout_s,
    # with no gap over body_idle_s (408).
    max_uploads: int = Field(16, ge=1, le=4096)
    # ... and of them from one client address (behind a proxy: its X-Forwarded-For, when the
    # proxy is trusted, else the proxy's own); 0 = no limit per client.
    max_uploads_per_client: int = Field(4, ge=0, le=4096)

    # -- Who may call the API ----------------------------------------------------------------
    # API keys, comma-separated (MOFO_API_KEYS): when set, every /v1 call needs
    # "Authorization: Bearer KEY" (401 without it, 403 with another); /healthz, /readyz, the
    # page and the docs stay open, /metrics too unless metrics_public is false. Unset: open.
    api_keys: str = ""
    metrics_public: bool = True
    max_spool_bytes: int = Field(1024 * MiB, ge=1)
    body_timeout_s: float = Field(300.0, gt=0, le=86_400)
    body_idle_s: float = Field(20.0, gt=0, le=3600)
    # Job uploads waiting for a worker (in Redis, or this process's spool without Redis): at
    # most this many clips and bytes together; one more gets 503 with Retry-After.
    max_job_uploads: int = Field(64, ge=1, le=100_000)
    max_job_upload_bytes: int = Field(2048 * MiB, ge=1)
    # How long `mofo worker` waits for its Redis to come back before a call fails.
    worker_redis_outage_s: float = Field(300.0, gt=0, le=86_400)

    # -- Work per request ------------------------------------------------------------------------
    # Motion analysis holds working-size pixels x frames (the kept frames and their motion
    # partners; about 100 bytes each at the peak of flow and regions). One clip may hold at most
    # max_work_pixels (more is refused, 422), the clips being worked on at once together at most
    # work_budget_pixels (a clip waits for room, within its deadline). The working long side is
    # at most max_work_side (an extreme aspect ratio is refused). Interactive requests may ask for
    # a short side of at most 448 (schemas.MAX_SHORT_SIDE).
    max_work_pixels: int = Field(48_000_000, ge=1, le=DecodeLimits.max_work_pixels)
    work_budget_pixels: int = Field(64_000_000, ge=1)
    max_work_side: int = Field(1024, ge=32, le=16_384)
    # JSON bodies (paths under the data root) are parsed only up to this many bytes.
    max_json_bytes: int = Field(1 * MiB, ge=64, le=64 * MiB)

    @field_validator("api_keys")
    @classmethod
    def _keys_are_long_enough(cls, value: str) -> str:
        for key in (k.strip() for k in value.split(",") if k.strip()):
            if len(key) < 16:
                raise ValueError("each API key needs at least 16 characters (use a random one)")
        return value

    def api_key_set(self) -> frozenset[str]:
        """The API keys, or an empty set when the API is open."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @field_validator("data_root")
    @classmethod
    def _data_root_is_a_folder(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        root = value.expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"data root {str(value)!r} is not an existing folder")
        if root == Path(root.anchor):
            raise ValueError("data root must not be the filesystem root; name the dataset folder")
        return root

    @field_validator("redis_url", "queue_redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis URL must start with redis://, rediss:// or unix://: {masked_url(value)!r}"
            )
        from redis.connection import parse_url

        try:  # a bad port or query fails here, not in a traceback at the first connection
            parse_url(value)
        except ValueError as exc:
            raise ValueError(f"redis URL {masked_url(value)!r} is not valid: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.queue_redis_url and not self.redis_url:
            raise ValueError("queue_redis_url needs redis_url too: the box cache lives there")
        for name in ("max_spool_bytes", "max_job_upload_bytes"):
            if getattr(self, name) < self.max_upload_bytes:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be at least max_upload_bytes "
                    f"({self.max_upload_bytes}), or an upload within the limit is never taken"
                )
        if self.body_idle_s > self.body_timeout_s:
            raise ValueError(
                f"body_idle_s ({self.body_idle_s:g}) must be at most body_timeout_s "
                f"({self.body_timeout_s:g})"
            )
        if self.work_budget_pixels < self.max_work_pixels:
            raise ValueError(
                f"work_budget_pixels ({self.work_budget_pixels}) must be at least "
                f"max_work_pixels ({self.max_work_pixels}), or a clip within the limit never runs"
            )
        if self.worker_heartbeat_s * 2 > self.worker_abandon_s:
            raise ValueError(
                f"worker_heartbeat_s ({self.worker_heartbeat_s:g}) must be at most half of "
                f"worker_abandon_s ({self.worker_abandon_s}), or live jobs look abandoned"
            )
        return self

    @property
    def queue_url(self) -> str | None:
        """The job queue's Redis URL."""
        return self.queue_redis_url or self.redis_url

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_bytes=self.max_upload_bytes,
            max_frames=self.max_frames,
            max_duration_s=self.max_duration_s,
            max_width=self.max_width,
            max_height=self.max_height,
            max_work_pixels=self.max_work_pixels,
            max_work_side=self.max_work_side,
        )
