"""jobd's spawn path: start a job's process from the trio thread, wait for it through a pidfd.

``trio.lowlevel.open_process`` runs ``subprocess.Popen`` on a worker thread, and the round trip
to that thread is what it costs over a bare spawn (/bin/true spawn to exit, p50 on the 2-core
VM: open_process 0.69-0.74 ms, this module 0.61-0.64 ms, posix_spawn 0.56-0.59 ms). Here the
same ``Popen`` call runs on the trio thread itself. In Python 3.11 it uses vfork() when there
is no ``preexec_fn``/``user``/``group``, so it holds the loop only until the child has exec'd
(p50 ~0.13 ms for /bin/true; ~4 % of the loop at 300 starts/s). It still gives what
``os.posix_spawn`` lacks in 3.11: a working directory, closing every other descriptor in the
child, and an exec or chdir failure raised in the parent as an ``OSError`` with its errno.

The child: argv with a separate executable, stdin from /dev/null, stdout and stderr to two new
pipes, its own session (so it leads its process group), no other descriptor but, if asked, the
write end of a status pipe (the launcher reports a failed launch there, see ``jobd.launch``),
exactly the environment given, the working directory given. Exit is waited for without
polling: the pidfd becomes readable when the child exits, then ``waitid(P_PIDFD)`` reaps it.
Signals go through the pidfd too, so a reused pid can never be hit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio

# pidfd_send_signal flag (Linux 6.9): signal the process group the pidfd's process leads. The
# group is found through the pidfd's own struct pid, so this stays right after the leader was
# reaped, as long as any member lives, and can never reach a group that reused the number.
PIDFD_SIGNAL_PROCESS_GROUP = 4


class Child:
    """A process started by :func:`spawn`: its pid, its two output pipes and its pidfd.

    ``returncode`` is None until :meth:`wait` has reaped the process; then, as in
    ``subprocess``, the exit status, or minus the signal number that killed it.
    Always end with :meth:`aclose` (or ``async with``): it closes the pipes and the pidfd.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        pidfd: int,
        stdout: trio.lowlevel.FdStream,
        stderr: trio.lowlevel.FdStream,
        status: trio.lowlevel.FdStream | None = None,
    ) -> None:
        self.pid: int = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        # The read end of the status pipe: closes without a word once the command has
        # exec'd (see jobd.launch.status).
        self.status = status
        # Kept only so that subprocess never reaps this pid on its own: a Popen collected
        # with returncode None goes to subprocess._active, and the next Popen() would
        # waitpid() it and steal the exit status. wait() sets its returncode.
        self._popen = popen
        self._pidfd = pidfd
        self._returncode: int | None = None
        # wait_readable allows one waiter per fd; concurrent wait() calls queue here.
        self._wait_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} returncode={self._returncode}>"

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def pidfd(self) -> int:
        """The pidfd, -1 once closed. Only for reading about the process: waiting and
        signalling go through this class."""
        return self._pidfd

    async def wait(self) -> int:
        """Wait until the process exits, reap it and return its returncode.

        Does not block the loop and does not poll. Cancelling it leaves the process
        unreaped, so a later ``wait()`` (or ``aclose()``) still gets its status.
        """
        async with self._wait_lock:
            while self._returncode is None:
                if self._pidfd < 0:
                    raise trio.ClosedResourceError("the child's pidfd is closed")
                await trio.lowlevel.wait_readable(self._pidfd)
                self._reap()
        return self._returncode

    def _reap(self) -> None:
        # WNOHANG: a readable pidfd means the process has exited, but never risk blocking the
        # loop. ChildProcessError (someone else reaped our child) is a bug and propagates.
        result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        if result is None:
            return
        # CLD_EXITED: the exit status; CLD_KILLED or CLD_DUMPED: the signal, negated.
        code = result.si_status if result.si_code == os.CLD_EXITED else -result.si_status
        self._returncode = code
        self._popen.returncode = code

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the process, or with ``group`` to the process group it leads.

        Through the pidfd: a pid that was reused by another process is never signalled.
        Signalling the process itself once it has been reaped does nothing (as in
        ``subprocess``); signalling its group still reaches what is left of the group.
        Signalling something that is already gone is not an error.
        """
        if self._pidfd < 0:
            raise trio.ClosedResourceError("the child's pidfd is closed")
        if not group and self._returncode is not None:
            return
        flags = PIDFD_SIGNAL_PROCESS_GROUP if group else 0
        try:
            signal.pidfd_send_signal(self._pidfd, sig, None, flags)
        except ProcessLookupError:
            pass
        except OSError as exc:
            if not (group and exc.errno == errno.EINVAL):
                raise
            # Linux < 6.9 has no group flag. While the leader is unreaped its pid cannot be
            # reused, so killpg is exact; after that it is what jobd did before (a group that
            # has emptied could in principle share its number with a new one).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    async def aclose(self) -> None:
        """Close both pipes, wait for the process, close the pidfd.

        Like ``trio.Process.aclose``: if cancelled while waiting, it SIGKILLs the process and
        reaps it (shielded) before the cancellation goes on. No descriptor is left open on
        any way out.
        """
        self.stdout.close()  # sync close: an await here could be cancelled between them
        self.stderr.close()
        if self.status is not None:
            self.status.close()
        try:
            await self.wait()
        finally:
            try:
                if self._returncode is None and self._pidfd >= 0:
                    with trio.CancelScope(shield=True):
                        self.send_signal(signal.SIGKILL)
                        await self.wait()
            finally:
                self._close_pidfd()

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            fd, self._pidfd = self._pidfd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def __del__(self) -> None:
        # Last resort when aclose() was skipped: no fd leak. An unreaped process is then
        # reaped by subprocess's own clean-up (its Popen goes to subprocess._active).
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


async def read_report(status: trio.lowlevel.FdStream, limit: int) -> bytes:
    """What the child wrote to its status pipe until every copy of the write end closed
    (at most ``limit`` bytes are kept); b"" means it exec'd its command."""
    data = b""
    while chunk := await status.receive_some(limit):
        data = (data + chunk)[:limit]
    return data


_DEVNULL: int | None = None


def _devnull() -> int:
    """/dev/null, opened once for every child's stdin: ``subprocess.DEVNULL`` would open and
    close it again for each spawn."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


def spawn(
    argv: Sequence[str], *, executable: str | None, env: Mapping[str, str], cwd: str,
    status_pipe: tuple[int, int] | None = None, keep_fds: tuple[int, ...] = (),
) -> Child:
    """Start ``executable`` (None: ``argv[0]`` on the PATH in ``env``) with ``argv`` and
    return it as a :class:`Child`.

    Synchronous on purpose: it cannot wait for anything but the child's exec (vfork), so
    it is not a checkpoint, like trio's other calls that cannot block. An exec or chdir
    failure raises ``OSError`` here, with its errno (ENOENT, EACCES, ENOEXEC, ...) and the
    file or directory it is about; nothing is left behind then. ``status_pipe``: a pipe
    (read end, write end) made with O_CLOEXEC; the child inherits the write end under its
    own number, and the Child owns the read end (both are closed here on failure).
    ``keep_fds``: descriptors of the daemon's the child inherits too (the syscall filter).
    """
    if not argv:
        raise ValueError("argv must not be empty")
    status_r, status_w = status_pipe if status_pipe is not None else (-1, -1)
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
    except BaseException:
        _close(status_r, status_w)
        raise
    try:
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
    except BaseException:
        _close(out_r, out_w, status_r, status_w)
        raise
    try:
        try:
            popen = subprocess.Popen(
                list(argv),
                executable=executable,
                stdin=_devnull(),
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                close_fds=True,
                pass_fds=((status_w,) if status_w >= 0 else ()) + keep_fds,
                env=env,
                cwd=cwd,
            )
        finally:
            # The child has its copies (or failed): ours would keep the pipes from ever
            # reaching EOF.
            _close(out_w, err_w, status_w)
        try:
            pidfd = os.pidfd_open(popen.pid)
        except BaseException:
            # Only fd exhaustion gets here: the child is ours and unreaped.
            popen.kill()
            popen.wait()
            raise
    except BaseException:
        _close(out_r, err_r, status_r)
        raise
    status = trio.lowlevel.FdStream(status_r) if status_r >= 0 else None
    return Child(popen, pidfd, trio.lowlevel.FdStream(out_r), trio.lowlevel.FdStream(err_r),
                 status)


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
