"""Test harness: trustme certificates, a real jobd process, and grpclib clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from grpclib import GRPCError, Status

from jobd.config import cgroup_parent_for
from jobd.v1 import jobs_pb2 as pb

T = TypeVar("T")

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0

# The identities every test daemon knows; "mallory" has a valid certificate but no role.
ROLES = {"client_0": "admin", "client_1": "user", "client_2": "user"}
IDENTITIES = [*ROLES, "mallory"]


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path
    server: Path

    def client(self, name: str) -> Path:
        return self.dir / f"{name}.pem"


def new_ca(directory: Path) -> trustme.CA:
    """A fresh CA in ``directory``: ``ca.crt``, and ``server.pem`` for localhost it issued."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    (directory / "server.pem").chmod(0o600)  # jobd refuses a key others can read
    return ca


def make_certs(directory: Path) -> Certs:
    ca = new_ca(directory)
    for name in IDENTITIES:
        cert = ca.issue_cert(f"{name}@jobd.test", common_name=name)
        cert.private_key_and_cert_chain_pem.write_to_path(str(directory / f"{name}.pem"))
    # Valid in every way but signed by a CA the daemon does not trust.
    other = trustme.CA()
    other.issue_cert("x.test", common_name="client_0").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "foreign.pem")
    )
    return Certs(directory, directory / "ca.crt", directory / "server.pem")


def bin_path(name: str) -> str:
    """A console script of the environment running the tests."""
    return str(Path(sys.executable).parent / name)


# Test jobs run the tests' own Python, which may live where only root can reach it (a home
# directory): every role runs as root unless a test is about accounts (tests/test_run_as*.py).
JOBS_AS_ROOT = '[run_as]\nuser = "root"\n'


class Daemon:
    """One jobd process on 127.0.0.1 with a free port, stopped and checked on close."""

    def __init__(
        self,
        certs: Certs,
        state_dir: Path,
        *extra: str,
        config_extra: str = "",
        run_as: str = JOBS_AS_ROOT,
        log_file: Path | None = None,
    ) -> None:
        """``config_extra``: TOML text appended to the config file (e.g. limits tables);
        ``run_as``: the ``[run_as]`` table ("" leaves the built-in accounts); ``log_file``:
        the daemon's stderr goes there instead of to a thread of this process (the bench)."""
        self.certs = certs
        self.state_dir = state_dir
        config = state_dir.parent / f"{state_dir.name}.toml"
        identities = "".join(f'{k} = "{v}"\n' for k, v in ROLES.items())
        config.write_text(run_as + "[identities]\n" + identities + config_extra)
        self.argv = [
            sys.executable, "-m", "jobd",
            "--listen", "127.0.0.1:0",
            "--cacert", str(certs.ca), "--cert", str(certs.server),
            "--state-dir", str(state_dir), "--config", str(config),
            *extra,
        ]  # fmt: skip
        self.port = 0
        self.log_file = log_file
        self._lines: list[str] = []
        self._ready = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self._signalled = False
        self._notify_dir: tempfile.TemporaryDirectory[str] | None = None
        self._notify: socket.socket | None = None

    @property
    def log(self) -> list[str]:
        """The daemon's stderr so far, a line each."""
        if self.log_file is None:
            return self._lines
        with contextlib.suppress(FileNotFoundError):
            return self.log_file.read_text(errors="replace").splitlines()
        return []

    def start(self) -> Daemon:
        if self.log_file is not None:
            return self._start_logging_to_file(self.log_file)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or not self.port:
            self.kill()
            raise RuntimeError("jobd did not start:\n" + "\n".join(self.log))
        return self

    def _start_logging_to_file(self, log_file: Path) -> Daemon:
        # For the bench: a thread here reading stderr would wake, in the measuring process,
        # for every line the daemon logs (~0.1 ms of each StartJob there). The address comes
        # the way systemd learns it instead, with READY=1 on $NOTIFY_SOCKET.
        # Kept open until the daemon is gone, so that its STOPPING=1 has somewhere to go.
        self._notify_dir = tempfile.TemporaryDirectory(prefix="jobd-notify-")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = os.path.join(self._notify_dir.name, "notify")
        self._notify.bind(address)
        self._notify.settimeout(1.0)
        with open(log_file, "wb") as stderr:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, env={**os.environ, "NOTIFY_SOCKET": address},
            )  # fmt: skip
        message, deadline = "", time.monotonic() + START_TIMEOUT
        while not message and self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                message = self._notify.recv(4096).decode()
        match = LISTENING.search(message)
        if match is None:
            self.kill()
            raise RuntimeError("jobd did not start:\n" + "\n".join(self.log))
        self.port = int(match.group(1))
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self._lines.append(line)
            match = LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    def entries(self) -> list[dict[str, Any]]:
        """The daemon's log so far, one JSON object a line (stderr is not a terminal here)."""
        return [json.loads(line) for line in self.log if line.startswith("{")]

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)
        # After a signal that ends the daemon, stop() only waits for it.
        self._signalled = self._signalled or signum != signal.SIGHUP

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (unless the test already signalled it) and wait: the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None and not self._signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def check_exit(self, code: int) -> None:
        """Fail unless jobd exited with ``code`` 0 and logged no traceback."""
        log = "\n".join(self.log)
        assert code == 0, f"jobd exited with {code}:\n{log}"
        assert "Traceback" not in log, log

    def kill(self) -> None:
        """SIGKILL (a test that failed half-way): and then remove what a daemon that dies
        leaves, its job groups, as its next start would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            if "--no-cgroups" not in self.argv:
                reap_cgroups(cgroup_parent_for(self.state_dir))
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            self._notify_dir.cleanup()
            self._notify_dir = None

    # Clients

    def run(self, who: str, scenario: Callable[[Any], Awaitable[T]], timeout: float = 60) -> T:
        """Run ``scenario(stub)`` on a fresh asyncio loop with a connection as ``who``."""
        return asyncio.run(asyncio.wait_for(self._with_stub(who, scenario), timeout))

    async def _with_stub(self, who: str, scenario: Callable[[Any], Awaitable[T]]) -> T:
        from grpclib.client import Channel

        from jobd.api.tls import client_context
        from jobd.v1.jobs_grpc import JobServiceStub

        ctx = client_context(self.certs.ca, self.certs.client(who))
        channel = Channel("127.0.0.1", self.port, ssl=ctx)
        try:
            return await scenario(JobServiceStub(channel))
        finally:
            channel.close()

    def jobctl_env(self, who: str = "client_0") -> dict[str, str]:
        """This environment, with jobctl pointed at this daemon as ``who``."""
        return {**os.environ, "JOBCTL_SERVER": self.server, "JOBCTL_CACERT": str(self.certs.ca),
                "JOBCTL_CERT": str(self.certs.client(who))}  # fmt: skip

    def jobctl(
        self, who: str, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [bin_path("jobctl"), *args], input=input, capture_output=True,
            env=self.jobctl_env(who), timeout=timeout,
        )  # fmt: skip


# Installs a seccomp filter that makes unshare(2) with CLONE_NEWNET fail with EPERM (as a
# kernel without network namespaces would), then execs the rest of its arguments: every
# process started from there on inherits the filter.
_REFUSE_NETNS = """
import ctypes, os, struct, sys
def op(code, jt, jf, k): return struct.pack("HBBI", code, jt, jf, k)
LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
prog = b"".join([
    op(LD, 0, 0, 4), op(JEQ, 1, 0, 0xC000003E), op(RET, 0, 0, 0x7FFF0000),
    op(LD, 0, 0, 0), op(JEQ, 0, 3, 272),
    op(LD, 0, 0, 16), op(JSET, 0, 1, 0x40000000), op(RET, 0, 0, 0x00050001),
    op(RET, 0, 0, 0x7FFF0000),
])
buf = ctypes.create_string_buffer(prog)
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Prog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""


def refusing_network_namespaces(argv: list[str]) -> list[str]:
    """``argv`` run under a filter that refuses new network namespaces (x86_64 only)."""
    if os.uname().machine != "x86_64":
        pytest.skip("the test's syscall filter is written for x86_64")
    return [sys.executable, "-c", _REFUSE_NETNS, *argv]


def python(code: str) -> list[str]:
    """argv that runs ``code`` in the test interpreter."""
    return [sys.executable, "-c", code]


# Output that is not text: every byte value, NULs and invalid UTF-8.
PAYLOAD = bytes(range(256)) * 40 + b"\x00\x00\xff\xfe invalid \xc3\x28 utf-8 \xed\xa0\x80\n\x00"


def binary_job(exit_code: int = 0) -> list[str]:
    """argv of a job that writes PAYLOAD to stdout and PAYLOAD reversed to stderr, in turns of
    1000 bytes, then exits with ``exit_code``."""
    return python(
        "import sys\n"
        f"data = {PAYLOAD!r}\n"
        "for i in range(0, len(data), 1000):\n"
        "    sys.stdout.buffer.write(data[i:i + 1000]); sys.stdout.flush()\n"
        "    sys.stderr.buffer.write(data[::-1][i:i + 1000]); sys.stderr.flush()\n"
        f"sys.exit({exit_code})\n"
    )


def sigint_default() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: the signal's default action.
    A shell starts background commands with SIGINT ignored, and an ignored signal stays ignored
    across exec; jobctl, like any program, keeps it so. Without this, a suite started with
    ``&`` would see Ctrl-C tests hang."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """For conditions in another process that no event of ours announces (checks /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def reap_cgroups(parent: str) -> None:
    """Kill what runs in ``parent``'s job groups and remove them, slices and parent too."""
    if os.geteuid() != 0:
        return
    from jobd.cgroups.detect import detect

    backend = detect(parent)
    for group in backend.leftovers():
        group.kill()
        deadline = time.monotonic() + 10
        while True:
            try:
                group.remove()
                break
            except OSError:  # busy until the kernel has reaped what was killed
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    backend.remove_parent()


def kill_groups(pgids: Iterator[int] | list[int]) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


# Calls shared by the end-to-end tests (grpclib stubs on the asyncio side).


async def start(stub: Any, argv: list[str], **kw: Any) -> str:
    reply = await stub.StartJob(pb.StartJobRequest(argv=argv, **kw))
    return str(reply.job_id)


async def collect(stub: Any, job_id: str, offset: int = 0) -> tuple[bytes, bytes, pb.Job, int]:
    """Follow a job to its end: (stdout, stderr, final status, number of messages)."""
    out, err, final, messages = bytearray(), bytearray(), None, 0
    async with stub.StreamOutput.open() as stream:
        await stream.send_message(pb.StreamOutputRequest(job_id=job_id, offset=offset), end=True)
        async for msg in stream:
            messages += 1
            assert final is None, "a message arrived after the final status"
            for chunk in msg.chunks:
                target = out if chunk.stream == pb.OUTPUT_STREAM_STDOUT else err
                target += chunk.data
            if msg.HasField("final"):
                final = msg.final
    assert final is not None, "the stream ended without a final status"
    return bytes(out), bytes(err), final, messages


async def wait_for_output(stub: Any, job_id: str, marker: bytes) -> None:
    """Return once ``marker`` has appeared in the job's stdout (used as a readiness signal)."""
    seen = bytearray()
    async with stub.StreamOutput.open() as stream:
        await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
        async for msg in stream:
            for chunk in msg.chunks:
                seen += chunk.data
            if marker in seen:
                await stream.cancel()
                return
    raise AssertionError(f"job ended before printing {marker!r}: {bytes(seen)!r}")


async def expect_status(status: Status, call: Any) -> str:
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status == status, info.value
    return str(info.value.message)


async def read_until(stub: Any, job_id: str, marker: bytes) -> bytes:
    """The job's stdout from its start until ``marker`` has appeared."""
    seen = bytearray()
    async with stub.StreamOutput.open() as stream:
        await stream.send_message(pb.StreamOutputRequest(job_id=job_id), end=True)
        async for msg in stream:
            for chunk in msg.chunks:
                if chunk.stream == pb.OUTPUT_STREAM_STDOUT:
                    seen += chunk.data
            if marker in seen:
                await stream.cancel()
                return bytes(seen)
    raise AssertionError(f"job ended before printing {marker!r}: {bytes(seen)!r}")


async def stop(stub: Any, job_id: str, grace_ms: int = 0) -> Any:
    request = pb.StopJobRequest(job_id=job_id)
    request.grace.FromMilliseconds(grace_ms)
    return await stub.StopJob(request)
