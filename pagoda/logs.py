"""Log lines of the long-running commands (`pagoda serve`, `pagoda gateway`)."""

from __future__ import annotations

import logging

JSON_LOGGERS = ("pagoda.access", "pagoda.audit")


class _LogFormatter(logging.Formatter):
    """Access and audit records are JSON lines already; the rest get time, level, logger."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name in JSON_LOGGERS:
            return record.getMessage()
        return super().format(record)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
