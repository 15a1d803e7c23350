"""Every table of the service, imported so ``Base.metadata`` is complete (Alembic, drift test)."""

from __future__ import annotations

from central.audit.models import AuditEvent
from central.auth.models import Token
from central.blobs.models import Blob
from central.builds.models import Build, BuildCache, Job, JobLog
from central.catalogs.models import CatalogItem, CatalogRow, CatalogVector, EmbedRun
from central.channels.models import Channel, ChannelEvent
from central.db import Base
from central.fleet.models import Node
from central.keys.models import TrustedPublisherKey
from central.registry.models import Bundle, Model, Version
from central.tuf.models import TufFile
from central.workers.models import Worker

TABLES = (
    CatalogRow,
    CatalogItem,
    CatalogVector,
    EmbedRun,
    AuditEvent,
    Token,
    Blob,
    Build,
    BuildCache,
    Job,
    JobLog,
    Worker,
    Channel,
    ChannelEvent,
    Node,
    Bundle,
    Model,
    Version,
    TrustedPublisherKey,
    TufFile,
)
metadata = Base.metadata
