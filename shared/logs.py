"""Structured logs: one JSON object a line, from the gateway (gunicorn) and the workers (dramatiq).

Every record carries the request id or the task id of the work it belongs to. Both live in context
variables, set by the gateway's RequestId middleware and by the workers' LogContext middleware, so a
log call never has to pass them along.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("task_id", default=None)

# gunicorn passes its access-log atoms as the record's args: these are the ones worth a field.
_ACCESS_ATOMS = {"method": "m", "path": "U", "query": "q", "status": "s", "bytes": "B", "duration_us": "D",
                 "remote_addr": "h", "user_agent": "a", "request_id": "{x-request-id}o"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, request_id / task_id,
    the fields of a gunicorn access line, and the traceback of an exception (in the log, never in a
    response)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for name, var in (("request_id", request_id), ("task_id", task_id)):
            value = getattr(record, name, None) or var.get()
            if value:
                entry[name] = value
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            for field, atom in _ACCESS_ATOMS.items():
                value = record.args[atom]
                if value not in (None, "-", ""):
                    entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO", stream: str = "ext://sys.stderr") -> dict[str, Any]:
    """A logging.config dict sending every logger (gunicorn's included) through the JSON formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": stream}},
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            # gunicorn's defaults give these loggers handlers of their own: send them to the root's.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Replace the process's log handlers with one JSON line handler on stderr (as it is now: dramatiq
    redirects a worker process's stderr to its logging pipe)."""
    config = logging_config(level)
    config["handlers"]["json"]["stream"] = sys.stderr
    logging.config.dictConfig(config)
