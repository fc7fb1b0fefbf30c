"""The daemon's log: one JSON object per line when stderr is not a terminal (for journald,
log shippers and scripts), readable text when it is. Job ids and identities travel as fields
(``extra={"job": ..., "identity": ...}``) as well as in the message."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


_ENCODE = json.JSONEncoder(default=str).encode  # json.dumps(default=...) makes one a call


class JSONFormatter(logging.Formatter):
    # (second, its text): every job logs twice, and strftime once a second is enough.
    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamp
        if second != int(record.created):
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODE(entry)


def setup(level: str, fmt: str = "auto") -> None:
    """``fmt``: "json", "text", or "auto" (JSON unless stderr is a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("jobd: %(levelname)s %(name)s: %(message)s"))
    # Neither format shows the caller's file and line, thread or process: spare every record
    # the frame walk and the calls that fill them in (logging's own documented switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
