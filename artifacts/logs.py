"""How the daemons log: plain text (default) or one JSON object per line (``--log-format
json``, for log shippers), each with the current trace id so a log line finds its trace."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from artifacts.tracing import TraceIdFilter

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s [trace %(trace_id)s]: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", "-"),
            "span_id": getattr(record, "span_id", "-"),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """The root logger: one stderr handler in ``fmt`` at ``level`` (replacing any other)."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
