"""Catalogs: bind to a model, publish product changes, start re-embedding, take vectors, status.
Every route here is a catalog's: a token bound to other catalogs gets 403 (``catalog=True``)."""

from __future__ import annotations

from litestar import Request, get, post, put

from artifacts.wire import (
    CatalogBinding,
    CatalogInfo,
    CatalogItemsRequest,
    Published,
    RunInfo,
    RunRequest,
    VectorBatch,
    VectorsStored,
)
from central.auth.guard import needs, principal_of, pull
from central.catalogs.service import CatalogService

CATALOG = "/v1/catalogs/{name:str}"


@put(CATALOG, status_code=200, **needs("build", catalog=True))
async def bind(
    catalog_service: CatalogService, request: Request, name: str, data: CatalogBinding
) -> CatalogInfo:
    """Which model embeds the catalog, the index it ships as, the stage and serving channels."""
    return await catalog_service.bind(name, data, principal_of(request))


@get(CATALOG, **pull(catalog=True))
async def status(catalog_service: CatalogService, name: str) -> CatalogInfo:
    """Products, runs (done/total, rate, ETA, state) and dead letters."""
    return await catalog_service.info(name)


@post(f"{CATALOG}/items", status_code=202, **needs("build", catalog=True))
async def items(
    catalog_service: CatalogService, request: Request, name: str, data: CatalogItemsRequest
) -> Published:
    """Product upserts and deletes onto ``catalog.updates.<name>`` (applied when consumed)."""
    return await catalog_service.publish_items(name, data, principal_of(request))


@post(f"{CATALOG}/runs", status_code=202, **needs("build", catalog=True))
async def start_run(
    catalog_service: CatalogService, request: Request, name: str, data: RunRequest
) -> RunInfo:
    """Re-embed for a model version (or resume a run: what is still missing is sent again)."""
    return await catalog_service.start_run(name, data, principal_of(request))


@get(f"{CATALOG}/runs/{{run_id:int}}", **pull(catalog=True))
async def get_run(catalog_service: CatalogService, name: str, run_id: int) -> RunInfo:
    """One run (embed workers check a job's run before working on it)."""
    return await catalog_service.run(name, run_id)


@put(f"{CATALOG}/vectors", status_code=200, **needs("embed", catalog=True))
async def vectors(
    catalog_service: CatalogService, request: Request, name: str, data: VectorBatch
) -> VectorsStored:
    """An embed worker's vectors for one job; stored once per product id + version + text digest."""
    return await catalog_service.store_vectors(name, data, principal_of(request))


handlers = [bind, status, items, start_run, get_run, vectors]
