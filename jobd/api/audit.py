"""The audit log: one JSON object a line for every RPC, appended to a file only root reads.

Each line: ``time`` (UTC, ISO 8601), ``identity`` (the client certificate's CN, "" if none),
``peer`` (address:port), ``action`` (the RPC's name), ``job_id`` ("" if none), ``outcome``
("ok" or the gRPC status name) and, for failures, ``message``. The file is opened with
O_APPEND and each line is written by a single ``write(2)``, so concurrent calls never
interleave. There is no API to read it. A failed write is logged once and never fails a call.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

MODE = 0o600
MAX_MESSAGE = 200  # characters of a failure's message kept in its line


class AuditLog:
    def __init__(self, fd: int | None, path: Path | None = None) -> None:
        """``fd`` None: audit nothing (the unit tests' services)."""
        self.fd = fd
        self.path = path
        self._failed = False

    @classmethod
    def open(cls, path: Path) -> AuditLog:
        """Open (creating it 0600) for appending; an existing file is made 0600 too."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        try:
            os.fchmod(fd, MODE)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def record(
        self, *, identity: str, peer: str, action: str, job_id: str, outcome: str,
        message: str = "",
    ) -> None:
        if self.fd is None:
            return
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "identity": identity,
            "peer": peer,
            "action": action,
            "job_id": job_id,
            "outcome": outcome,
        }
        if message:
            entry["message"] = message[:MAX_MESSAGE]
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode()
        try:
            written = os.write(self.fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.error("cannot write the audit log %s (logged once): %s", self.path, exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
