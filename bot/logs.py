"""Logging set-up for the process: readable lines or one JSON object per line, on stderr.

Libraries that narrate routine work at INFO (every HTTP request, ICE check, gateway event)
are held at WARNING unless the operator asks for DEBUG, so the service's own lines stay
readable.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

__all__ = ["QUIET_LIBRARIES", "JsonFormatter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
QUIET_LIBRARIES = (
    "aiohttp.access",
    "aioice",
    "aiortc",
    "discord.client",
    "discord.ext.voice_recv",
    "discord.gateway",
    "discord.http",
    "discord.voice_state",
    "httpcore",
    "httpx",
)
"""Loggers held at WARNING unless the level is DEBUG."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # A message with newlines stays one line: json.dumps escapes them.
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: Literal["text", "json"]) -> None:
    """Send every record to stderr in `log_format`; quiet `QUIET_LIBRARIES` below DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    library_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
