"""One typed config object for the central service (CLI flags and env map onto it)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FLEET_CLAIMS = ("first-report", "assigned")  # CentralConfig.fleet_claims


class CentralConfig(msgspec.Struct, kw_only=True):
    home: str = "~/.shipyard/central"
    host: str = "127.0.0.1"
    port: int = 8700
    database_url: str | None = None  # default: sqlite+aiosqlite:///{home}/central.db
    max_blob_bytes: int = 4 << 30  # one bundle file
    max_json_bytes: int = 1 << 20  # any JSON request body
    max_catalog_bytes: int = 128 << 20  # a catalog an index build may name (parsed at submit)
    fleet_max_nodes_per_token: int = 256  # node names one token may report (fleet rows)
    # who gives a node its token: "first-report" (the first token to report it) or "assigned"
    # (only an admin's handover/assignment; a pull token reports only the nodes given to it)
    fleet_claims: str = "first-report"
    local_workers: int = (
        2  # in-process CPU build workers (0: none; 2: one builds, the other verifies)
    )
    lease_seconds: float = 60.0  # a build lease expires after this long without a heartbeat
    max_job_attempts: int = 3
    # a job no live worker can build (or verify) for this long ends no-capable-worker; a build
    # may ask for another deadline (BuildRequest.worker_deadline_s)
    worker_deadline_s: float = 900.0
    build_timeout_s: float = 1800.0
    tuf_offline_keys: str | None = (
        None  # where the TUF root/targets keys are (None: HOME/tuf/offline)
    )
    tuf_timestamp_expiry_s: float = 86400.0  # a node seeing no fresh timestamp this long: stale
    tuf_refresh_s: float | None = None  # re-sign the timestamp this often (None: expiry / 4)
    otlp_endpoint: str | None = None  # OpenTelemetry traces over OTLP/HTTP (needs the otel extra)
    # Blobs in an OCI distribution registry instead of HOME/blobs (what several replicas share)
    oci_url: str | None = None
    nats_url: str | None = None  # the catalog queue (NATS JetStream); None: catalogs answer 503
    oci_repository: str = "shipyard/blobs"
    oci_username: str | None = None
    oci_password: str | None = None
    oci_public_url: str | None = None  # the registry as edges reach it (default: oci_url)
    blob_redirect: bool = False  # GET /v1/blobs answers 307 to the registry instead of streaming
    # The TUF online keys (timestamp, snapshot, models): every replica must hold the same ones
    tuf_online_keys: str | None = None  # default: HOME/tuf/online

    @property
    def home_path(self) -> Path:
        return Path(os.path.expanduser(self.home))

    @property
    def sqlite_path(self) -> Path | None:
        """The embedded database's file (None: an external database_url)."""
        return None if self.database_url else self.home_path / "central.db"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def blobs_path(self) -> Path:
        return self.home_path / "blobs"

    @property
    def trusted_keys_path(self) -> Path:
        return self.home_path / "trusted_keys"

    @property
    def tuf_path(self) -> Path:
        return self.home_path / "tuf"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
