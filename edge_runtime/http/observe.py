"""Per-request bookkeeping shared by every API module: metrics for every answer (errors
too) and the headers that name the model version and backend that answered."""

from __future__ import annotations

import time
from types import TracebackType

from litestar import Request

from edge_runtime.http.problems import status_of
from edge_runtime.inference.results import Served
from edge_runtime.metrics import Metrics


def served_headers(r: Served, started: float | None = None) -> dict[str, str]:
    headers = {
        "X-Shipyard-Model": r.model,
        "X-Shipyard-Model-Version": str(r.version),
        "X-Shipyard-Backend": r.target,
    }
    if started is not None:
        headers["Server-Timing"] = server_timing(started)
    return headers


def server_timing(started: float) -> str:
    """Time inside the handler so far (the client sees it in its devtools)."""
    return f"app;dur={(time.perf_counter() - started) * 1e3:.3f}"


class Observed:
    """``with Observed(request, "embeddings") as obs:`` counts the request and its latency
    under its final status; set ``obs.model`` once the model is known."""

    def __init__(self, request: Request, endpoint: str, model: str = "-") -> None:
        self.metrics: Metrics = request.app.state["metrics"]
        self.endpoint, self.model = endpoint, model
        self.started = time.perf_counter()

    def __enter__(self) -> Observed:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        status = str(status_of(exc))
        self.metrics.requests.labels(self.model, self.endpoint, status).inc()
        self.metrics.latency.labels(self.model, self.endpoint).observe(
            time.perf_counter() - self.started
        )
