"""JSON log lines carry the current trace id, so a log line finds its trace (and the reverse)."""

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from artifacts.logs import JsonFormatter, configure_logging
from artifacts.tracing import TraceIdFilter, Tracing


def record(msg: str) -> logging.LogRecord:
    r = logging.LogRecord("shipyard.test", logging.WARNING, __file__, 1, msg, (), None)
    TraceIdFilter().filter(r)
    return r


def test_json_line_outside_a_span():
    doc = json.loads(JsonFormatter().format(record("hello")))
    assert doc["message"] == "hello" and doc["level"] == "warning"
    assert (
        doc["trace_id"] == "-" and doc["logger"] == "shipyard.test" and doc["ts"].endswith("+00:00")
    )


def test_json_line_inside_a_span_names_it():
    exporter = InMemorySpanExporter()
    tracing = Tracing("t", exporter=exporter)
    with tracing.span("work"):
        doc = json.loads(JsonFormatter().format(record("inside")))
    span = exporter.get_finished_spans()[0]
    assert doc["trace_id"] == f"{span.context.trace_id:032x}"
    assert doc["span_id"] == f"{span.context.span_id:016x}"


def test_tracing_off_is_a_no_op():
    t = Tracing("t")
    assert not t.enabled
    with t.span("x") as s:
        assert s is None
    assert t.record("y", 1, 2) is None


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("info", "yaml")
