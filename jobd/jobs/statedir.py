"""The state directory: its layout, and the lock that keeps a second daemon out of it."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)


class StateDirError(Exception):
    """The state directory cannot be used; the message says why."""


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.output = path / "output"
        self.database = path / "jobs.db"
        self._lock_fd: int | None = None

    def claim(self) -> None:
        """Create the layout and lock it for this process, or raise StateDirError."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._make_private()
            self.output.mkdir(exist_ok=True, mode=0o700)
            fd = os.open(self.path / "jobd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError(f"cannot use state directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirError(
                    f"state directory {self.path} is in use by another jobd (pid {holder})"
                ) from None
            raise StateDirError(f"cannot lock {self.path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _make_private(self) -> None:
        # Jobs run as other accounts: the history, output and audit log are the daemon's.
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            self.path.chmod(0o700)
            log.warning("state directory %s was open to others (mode %04o): now 0700",
                        self.path, mode)

    def in_use(self) -> bool:
        """Whether a daemon holds this state directory now (never creates anything)."""
        try:
            fd = os.open(self.path / "jobd.lock", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also drops the lock if we got it
        return False

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        """Claimed for this process until the block ends."""
        self.claim()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def log_path(self, job_id: str) -> Path:
        return self.output / f"{job_id}.log"
