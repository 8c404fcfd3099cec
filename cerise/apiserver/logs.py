"""The apiserver's logs as JSON lines, carrying the job and namespace they concern.

Log with ``extra={"job": id, "namespace": ns}`` and the fields appear as keys of the line,
so a log system can follow one job across the apiserver and the operator.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from cerise.model import names

FIELDS = ("job", "namespace")


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the known fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        line.update({key: getattr(record, key) for key in FIELDS if hasattr(record, key)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        # One record, one line, even for readers that split at U+2028 or NEL.
        return names.printable(json.dumps(line, ensure_ascii=False))


CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonLines}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}},
}
"""A `logging.config.dictConfig` for uvicorn's `log_config`."""
