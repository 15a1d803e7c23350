"""OpenTelemetry tracing for the daemons, off unless configured: without an OTLP endpoint (or a
test's exporter) nothing of OpenTelemetry is imported and every call here is a no-op, so the
edge stays light. One :class:`Tracing` per process object (never the global provider: tests
run several nodes in one process).

Install the ``otel`` extra (``opentelemetry-sdk`` + the OTLP/HTTP exporter) to turn it on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

_OFF = contextlib.nullcontext()  # reusable: entering it yields None, exiting does nothing

log = logging.getLogger("shipyard.tracing")
INSTALL_HINT = "tracing needs the otel extra: pip install 'shipyard[otel]'"


@functools.cache
def _otel_trace() -> Any | None:
    """``opentelemetry.trace``, or None when not installed (looked up once)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


class Tracing:
    def __init__(
        self,
        service: str,
        *,
        endpoint: str | None = None,
        exporter: Any = None,
        sample_ratio: float = 1.0,
    ) -> None:
        self.service = service
        self.enabled = bool(endpoint or exporter)
        self._tracer: Any = None
        self._provider: Any = None
        if not self.enabled:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as exc:
            raise RuntimeError(INSTALL_HINT) from exc
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            # a caller's "sampled" flag is a hint, not an order: unauthenticated clients must
            # not raise the sampling rate (or its export cost)
            sampler=ParentBased(
                TraceIdRatioBased(sample_ratio),
                remote_parent_sampled=TraceIdRatioBased(sample_ratio),
            ),
        )
        if exporter is not None:  # tests: the SDK's in-memory exporter, synchronously
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._provider = provider
        self._tracer = provider.get_tracer("shipyard")
        log.info("tracing %s to %s", service, endpoint or type(exporter).__name__)

    def span(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
        """A child of the current span (current while the block runs); None when off (then
        one shared no-op context: a generator-based one costs microseconds per request)."""
        if self._tracer is None:
            return _OFF
        return self._tracer.start_as_current_span(name, attributes=_clean(attributes))

    def record(
        self, name: str, start_ns: int, end_ns: int, parent: Any = None, **attributes: Any
    ) -> Any:
        """A finished span with times measured elsewhere (e.g. on the batcher's thread), as a
        child of ``parent`` or of the current span."""
        if self._tracer is None:
            return None
        trace = _otel_trace()
        assert trace is not None
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        s = self._tracer.start_span(
            name, context=ctx, start_time=start_ns, attributes=_clean(attributes)
        )
        s.end(end_time=max(end_ns, start_ns))
        return s

    @contextlib.contextmanager
    def server_span(self, name: str, headers: dict[str, str], **attributes: Any) -> Iterator[Any]:
        """The root of a request's tree, continuing the caller's W3C ``traceparent``."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        ctx = TraceContextTextMapPropagator().extract(headers)
        with self._tracer.start_as_current_span(
            name, context=ctx, kind=SpanKind.SERVER, attributes=_clean(attributes)
        ) as s:
            yield s

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, hex; None outside a recorded span."""
    trace = _otel_trace()
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (e.g. a build id on ``POST /v1/builds``); no-op when off."""
    trace = _otel_trace()
    if trace is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_clean(attributes))


class Traced:
    """ASGI middleware: one server span per HTTP request (named by the route template once
    routing has run), the trace id in ``X-Trace-Id`` on the response."""

    def __init__(self, app: Any, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.tracing.enabled:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        with self.tracing.server_span(
            f"{method} (unmatched)", headers, **{"http.request.method": method}
        ) as span:  # renamed to the route template once routing ran (never the raw path)
            ids = current_ids()

            async def sending(message: Any) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if ids is not None:
                        message = {
                            **message,
                            "headers": [
                                *message.get("headers", []),
                                (b"x-trace-id", ids[0].encode()),
                            ],
                        }
                await send(message)

            try:
                await self.app(scope, receive, sending)
            finally:
                route = scope.get("path_template")
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)


class TraceIdFilter(logging.Filter):
    """Puts ``trace_id``/``span_id`` on every record (``-`` outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        record.trace_id, record.span_id = ids if ids is not None else ("-", "-")
        return True
