"""The ssh group of ``nox -s bench``: jobd next to the tool a user would reach for instead, ssh
to the host, measured side by side in one run.

A throwaway sshd (Debian's openssh-server) listens on 127.0.0.1 with keys made for the run and
only aes256-gcm, the cipher closest to jobd's TLS_AES_256_GCM_SHA384. Each row times the
whole client command, and takes the client's own CPU time from its rusage: what a user waits
for and what their machine spends.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchlib import MiB, Row, bench_daemon, quiet_disk, record
from harness import Certs, bin_path

SSHD = "/usr/sbin/sshd"
CIPHER = "aes256-gcm@openssh.com"


def timed(argv: list[str], **kw: object) -> tuple[float, float]:
    """Wall-clock seconds and the command's own CPU seconds (user + system, its children
    included), output to /dev/null."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def median_of(runs: int, argv: list[str], settle: bool = False,
              **kw: object) -> tuple[float, float]:  # fmt: skip
    """``settle``: each sample starts from the same page cache (see ``quiet_disk``): the
    daemon writes the job's output to its log, and on this VM writing into memory the page
    cache has never used costs ~10x the system time (`dd` of 1 GiB: 2.4 s, then 0.23 s)."""
    samples = []
    for _ in range(runs):
        if settle:
            quiet_disk()
        samples.append(timed(argv, **kw))
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_sshd(base: Path) -> Iterator[list[str]]:
    """An sshd on 127.0.0.1 for this run only; yields the ssh command that reaches it."""
    base.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)],
                       check=True)  # fmt: skip
    shutil.copy(base / "client.pub", base / "authorized_keys")
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {base / 'host'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPidFile {base / 'sshd.pid'}\n"
        f"Ciphers {CIPHER}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "UsePAM no\nStrictModes no\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation directory
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    ssh = ["ssh", "-F", "/dev/null", "-i", str(base / "client"), "-p", str(port),
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-c", CIPHER,
           f"{os.environ.get('USER', 'root')}@127.0.0.1"]  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([*ssh, "true"], capture_output=True).returncode != 0:
            if sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the throwaway sshd did not come up")
            time.sleep(0.1)
        yield ssh
    finally:
        sshd.terminate()
        sshd.wait()


def bench_ssh(certs: Certs, base: Path, size: int, runs: int) -> None:
    """``jobctl run`` and ``jobctl logs`` next to ssh: a trivial command, ``size`` bytes of a
    command's stdout, and the same bytes read back from a finished job or a file."""
    print(f"ssh peer, {size // MiB} MiB", flush=True)
    if shutil.which(SSHD) is None and not Path(SSHD).exists():
        print("  skipped: needs Debian's openssh-server (apt install openssh-server)")
        return
    gib = size / (1 << 30)
    with throwaway_sshd(base / "ssh") as ssh:
        daemon = bench_daemon(certs, base / "ssh-peer").start()
        try:
            env = daemon.jobctl_env()
            jobctl = bin_path("jobctl")
            ssh_true, _ = median_of(runs * 3, [*ssh, "true"])
            run_true, _ = median_of(runs * 3, [jobctl, "run", "--", "true"], env=env)
            record(Row("ssh", "jobctl run -- true (wall)", run_true * 1000, "ms",
                       ssh_true * 1000, "ssh host true"))

            produce = ["head", "-c", str(size), "/dev/zero"]
            ssh_out, ssh_cpu = median_of(runs, [*ssh, " ".join(produce)], settle=True)
            run_out, run_cpu = median_of(runs, [jobctl, "run", "--", *produce], settle=True,
                                         env=env)
            record(Row("ssh", f"{size // MiB} MiB of stdout: jobctl run (throughput)",
                       size / MiB / run_out, "MiB/s", size / MiB / ssh_out, "ssh host head",
                       ">= 0.5x"))
            record(Row("ssh", f"{size // MiB} MiB of stdout: jobctl run client CPU per GiB",
                       run_cpu / gib, "s", ssh_cpu / gib, "ssh's client", "<= 2.8x (half of 5.6x)"))

            job_id = subprocess.run([jobctl, "start", "--", *produce], env=env, check=True,
                                    capture_output=True, text=True).stdout.strip()
            subprocess.run([jobctl, "status", "--watch", "--interval", "0.2", job_id], env=env,
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            copy = base / "ssh" / "bytes"
            with copy.open("wb") as f:
                subprocess.run(produce, check=True, stdout=f)
            ssh_cat, ssh_cat_cpu = median_of(runs, [*ssh, f"cat {copy}"])
            logs, logs_cpu = median_of(runs, [jobctl, "logs", job_id], env=env)
            record(Row("ssh", f"finished {size // MiB} MiB: jobctl logs (throughput)",
                       size / MiB / logs, "MiB/s", size / MiB / ssh_cat, "ssh host cat",
                       ">= 0.7x"))
            record(Row("ssh", f"finished {size // MiB} MiB: jobctl logs client CPU per GiB",
                       logs_cpu / gib, "s", ssh_cat_cpu / gib, "ssh's client"))
        finally:
            daemon.stop()
