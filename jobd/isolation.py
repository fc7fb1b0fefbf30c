"""Isolation: which Linux namespaces a job runs in, who may ask for what, and how it is done.

A job may get its own PID, mount, network, UTS and IPC namespaces. What it gets is its request,
or without one its role's default; a role may be forbidden to ask for less than its default
(``allow_opt_out``) or to use the host's network at all (``allow_network``). A namespace this
host cannot create is dropped from the defaults at start (with one warning) and refused when
asked for (FAILED_PRECONDITION naming it). This part is pure and tested synchronously.

The namespaces are made by util-linux ``unshare`` in the spawn chain, never by the daemon:
the daemon keeps its vfork spawn path. After the cgroup shim has placed itself in the job's
cgroups it execs::

    unshare --pid --mount --propagation private --net --uts --ipc -- \
        timeout --foreground 0 /bin/sh -c SETUP jobd-isolate COMMAND...

``unshare`` makes the namespaces and execs ``timeout`` (coreutils) with the timer off, used
as the waiter: its child is the first process of the new PID namespace (PID 1 there), and it
exits with that child's exit code or dies of the child's signal (core dumps off, so a crash
is not dumped twice). ``unshare --fork`` would be the obvious waiter, but util-linux before
2.39 turns a child killed by SIGKILL (the OOM killer, a kill -9) into "exit code 1". SETUP,
a few lines of ``/bin/sh`` running as PID 1, mounts a /proc of the new PID namespace, private
tmpfs on /tmp, /var/tmp and /dev/shm, and a sysfs of the new network namespace on /sys (one
``mount -a`` over a small fstab the daemon wrote at start; propagation is private, so nothing
reaches the host), brings ``lo`` up through ``/sys/class/net/lo/flags``, writes the host name
to ``/proc/sys/kernel/hostname``, and execs the command, which stays PID 1. No ``ip`` or
``hostname`` binary is needed. The waiter stays in the job's cgroup (and process group) and
goes with the job when it is stopped; when the job's PID 1 exits, the kernel kills every other
process of its PID namespace.

PID and network isolation use a mount namespace of their own (for /proc and /sys) even without
``mount``; only ``mount`` makes the temporary directories private.

A signal from outside a PID namespace reaches its PID 1 only if PID 1 handles it: a stop's
SIGTERM (sent by the daemon, and passed on by ``timeout``) is ignored by a command without a
handler, which is then killed with its cgroup when the grace period ends.
"""

from __future__ import annotations

import enum
import itertools
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobd.auth import Role
from jobd.errors import FailedPrecondition, PermissionDenied, SpawnFailed
from jobd.system import SHELL, SYSTEM_PATH


class Namespace(enum.Enum):
    PID = "pid"
    MOUNT = "mount"
    NETWORK = "network"
    UTS = "uts"
    IPC = "ipc"


ORDER = tuple(Namespace)
ALL: frozenset[Namespace] = frozenset(Namespace)
NONE: frozenset[Namespace] = frozenset()
ALIASES = {"net": Namespace.NETWORK}
# Directories a job with a mount namespace gets empty and private (tmpfs), as systemd's
# PrivateTmp gives /tmp and /var/tmp; /dev/shm holds POSIX shared memory.
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Namespaces whose setup mounts something: /proc, the private directories, /sys.
MOUNTING = frozenset({Namespace.PID, Namespace.MOUNT, Namespace.NETWORK})
SETUP_FAILED = 125  # the exit code when the namespaces cannot be set up (as the cgroup shim)
PROBE_TIMEOUT = 10.0


def names(namespaces: Iterable[Namespace]) -> str:
    """``pid, mount, network``: in the canonical order; ``none`` for none."""
    chosen = set(namespaces)
    return ", ".join(ns.value for ns in ORDER if ns in chosen) or "none"


def parse_names(value: object, where: str) -> frozenset[Namespace]:
    """A list of namespace names, or "all" / "none" (``net`` is ``network``)."""
    if value in ("all", "none"):
        return ALL if value == "all" else NONE
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of namespaces, \"all\" or \"none\"")
    found = set()
    for name in value:
        ns = ALIASES.get(name) or next((n for n in ORDER if n.value == name), None)
        if ns is None:
            known = ", ".join(n.value for n in ORDER)
            raise ValueError(f"{where}: unknown namespace {name!r} (known: {known})")
        found.add(ns)
    return frozenset(found)


# --- policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleIsolation:
    """One role's rules: what its jobs get by default, and what it may leave out."""

    default: frozenset[Namespace] = NONE
    # May a request ask for less than ``default``?
    allow_opt_out: bool = True
    # May its jobs use the host's network (run without a network namespace)?
    allow_network: bool = True

    def __post_init__(self) -> None:
        if not self.allow_network and Namespace.NETWORK not in self.default:
            raise ValueError(
                "allow_network = false needs network in default (add it, or allow the network)"
            )

    @property
    def required(self) -> frozenset[Namespace]:
        """What every job of the role must have (where this host can give it)."""
        required = NONE if self.allow_opt_out else self.default
        return required | ({Namespace.NETWORK} if not self.allow_network else NONE)

    def describe(self) -> str:
        rules = [f"default {names(self.default)}"]
        if not self.allow_opt_out and self.default:
            rules.append("may not opt out")
        rules.append("host network allowed" if self.allow_network else "no host network")
        return ", ".join(rules)


BUILTIN_ROLES: Mapping[Role, RoleIsolation] = {
    Role.USER: RoleIsolation(ALL, allow_opt_out=False, allow_network=False),
    Role.ADMIN: RoleIsolation(NONE, allow_opt_out=True, allow_network=True),
}


@dataclass(frozen=True)
class Availability:
    """Which namespaces this host lets the daemon create, and why the others not."""

    available: frozenset[Namespace] = NONE
    reasons: Mapping[Namespace, str] = field(default_factory=dict)

    def why(self, ns: Namespace) -> str:
        return self.reasons.get(ns, "isolation is not set up")

    def describe(self) -> str:
        """Lines for ``jobd --check``."""
        lines = [f"isolation: namespaces available: {names(self.available)}"]
        for ns in ORDER:
            if ns not in self.available:
                lines.append(f"  {ns.value}: unavailable: {self.why(ns)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class IsolationPolicy:
    roles: Mapping[Role, RoleIsolation] = field(default_factory=lambda: dict(BUILTIN_ROLES))

    def rule(self, role: Role) -> RoleIsolation:
        return self.roles.get(role) or BUILTIN_ROLES.get(role) or RoleIsolation()

    def effective(
        self, request: frozenset[Namespace] | None, role: Role, availability: Availability
    ) -> frozenset[Namespace]:
        """The namespaces a job gets: ``request`` (None: the role's default), checked."""
        rule = self.rule(role)
        available = availability.available
        if request is None:
            return rule.default & available  # the unavailable rest was warned about at start
        missing = request - available
        if missing:
            reasons = "; ".join(f"{ns.value}: {availability.why(ns)}"
                                for ns in ORDER if ns in missing)
            raise FailedPrecondition(
                f"isolation: {names(missing)} namespace{_s(missing)} not available on this "
                f"server ({reasons})"
            )
        lacking = (rule.required & available) - request
        if lacking:
            if not rule.allow_opt_out:
                why = f"its default isolation ({names(rule.default)}) may not be reduced"
            else:
                why = "it may not use the host's network"
            raise PermissionDenied(
                f"isolation: the {role.value} role may not run jobs without {names(lacking)} "
                f"isolation: {why}"
            )
        return request

    def unavailable_defaults(self, availability: Availability) -> dict[Role, frozenset[Namespace]]:
        """Per role, what its default asks for that this host cannot give."""
        dropped = {}
        for role in Role:
            missing = self.rule(role).default - availability.available
            if missing:
                dropped[role] = missing
        return dropped

    def describe(self) -> list[str]:
        return [f"isolation for {role.value}: {self.rule(role).describe()}" for role in Role]


def _s(items: frozenset[Namespace]) -> str:
    return "s" if len(items) > 1 else ""


def parse_role_table(table: Mapping[str, object], where: str, base: RoleIsolation) -> RoleIsolation:
    """A config file's ``[isolation.ROLE]``: default = [...] | "all" | "none",
    allow_opt_out = bool, allow_network = bool; keys left out keep ``base``'s."""
    unknown = sorted(set(table) - {"default", "allow_opt_out", "allow_network"})
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    default = base.default
    if "default" in table:
        default = parse_names(table["default"], f"{where}: default")
    flags = {"allow_opt_out": base.allow_opt_out, "allow_network": base.allow_network}
    for name in flags:
        if name in table:
            value = table[name]
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be true or false")
            flags[name] = value
    try:
        return RoleIsolation(default, **flags)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# --- the spawn chain --------------------------------------------------------------------


def private_dirs() -> tuple[str, ...]:
    """The private temporary directories this host has (a symlink is left alone)."""
    return tuple(d for d in PRIVATE_DIRS if os.path.isdir(d) and not os.path.islink(d))


def fstab_text(namespaces: frozenset[Namespace], dirs: Iterable[str]) -> str:
    """What ``mount -a`` mounts in the job's mount namespace; empty when nothing.

    Sources are named ``jobd-*``: ``mount -a`` skips an entry whose source and target are
    mounted already, and the host's /proc is "proc" on /proc.
    """
    lines = []
    if Namespace.PID in namespaces:
        # Mounted from inside the new PID namespace (by PID 1's child): it shows that one.
        lines.append("jobd-proc /proc proc rw,nosuid,nodev,noexec 0 0")
    if Namespace.MOUNT in namespaces:
        for d in dirs:
            source = "jobd-" + d.strip("/").replace("/", "-")
            lines.append(f"{source} {d} tmpfs rw,nosuid,nodev,mode=1777 0 0")
    if Namespace.NETWORK in namespaces:
        # A sysfs mounted in the new network namespace shows its devices: only lo.
        lines.append("jobd-sysfs /sys sysfs rw,nosuid,nodev,noexec 0 0")
    return "".join(line + "\n" for line in lines)


def unshare_flags(namespaces: frozenset[Namespace]) -> list[str]:
    flags = []
    if Namespace.PID in namespaces:
        flags.append("--pid")  # for the children of the waiter it execs: see the module doc
    if namespaces & MOUNTING:
        flags += ["--mount", "--propagation", "private"]
    if Namespace.NETWORK in namespaces:
        flags.append("--net")
    if Namespace.UTS in namespaces:
        flags.append("--uts")
    if Namespace.IPC in namespaces:
        flags.append("--ipc")
    return flags


def hostname_for(job_id: str) -> str:
    return f"job-{job_id[:8]}"


def _step(command: str, what: str) -> str:
    message = shlex.quote(f"jobd: cannot set up the job's isolation: {what}")
    return f"{command} || {{ echo {message} >&2; exit {SETUP_FAILED}; }}\n"


class Launcher:
    """Builds the ``unshare ... -- [timeout ...] /bin/sh -c SETUP`` part of a job's spawn
    chain (see the module doc), and probes it."""

    def __init__(
        self, unshare: str | None, mount: str | None, timeout: str | None, directory: Path
    ) -> None:
        self.unshare = unshare
        self.mount = mount
        self.timeout = timeout
        self.directory = directory
        self.dirs = private_dirs()
        self._fstabs: dict[frozenset[Namespace], Path] = {}

    @classmethod
    def find(cls, directory: Path) -> Launcher:
        """The tools from the daemon's PATH, then the usual places."""
        search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), SYSTEM_PATH) if p)
        unshare, mount, timeout = (shutil.which(t, path=search)
                                   for t in ("unshare", "mount", "timeout"))  # fmt: skip
        return cls(unshare, mount, timeout, directory)

    def prepare(self) -> None:
        """Write the fstab files the chain mounts from (once, at start)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        for size in range(1, len(MOUNTING) + 1):
            for key in map(frozenset, itertools.combinations(MOUNTING, size)):
                self._write_fstab(key)

    def _write_fstab(self, key: frozenset[Namespace]) -> Path:
        path = self.directory / f"{'+'.join(ns.value for ns in ORDER if ns in key)}.fstab"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(fstab_text(key, self.dirs))
        tmp.chmod(0o644)
        tmp.replace(path)
        self._fstabs[key] = path
        return path

    def setup_script(self, namespaces: frozenset[Namespace], job_id: str) -> str:
        """The /bin/sh SETUP that runs as the job's first process; empty when none is needed."""
        script = ""
        key = namespaces & MOUNTING
        if key:
            assert self.mount is not None
            fstab = self._fstabs.get(key) or self._write_fstab(key)
            mount = f"{shlex.quote(self.mount)} -a -T {shlex.quote(str(fstab))}"
            script += _step(mount, "mount failed (see above)")
        if Namespace.NETWORK in namespaces:
            # IFF_UP | IFF_LOOPBACK: what `ip link set lo up` does, without needing ip.
            script += _step("echo 0x9 > /sys/class/net/lo/flags", "cannot bring lo up")
        if Namespace.UTS in namespaces:
            name = shlex.quote(hostname_for(job_id))
            script += _step(f"echo {name} > /proc/sys/kernel/hostname", "cannot set host name")
        return script + 'exec "$@"' if script else ""

    def command(
        self, namespaces: frozenset[Namespace], job_id: str, argv: list[str]
    ) -> list[str]:
        """``argv`` wrapped so that it runs in ``namespaces``."""
        if self.unshare is None:
            raise SpawnFailed("isolation: unshare (util-linux) not found")
        chain = [self.unshare, *unshare_flags(namespaces), "--"]
        if Namespace.PID in namespaces:
            assert self.timeout is not None
            chain += [self.timeout, "--foreground", "0"]  # the waiter; 0: no time limit
        script = self.setup_script(namespaces, job_id)
        if script:
            chain += [SHELL, "-c", script, "jobd-isolate"]
        return [*chain, *argv]

    def check_paths(self, namespaces: frozenset[Namespace], cwd: str, executable: str) -> None:
        """Refuse a working directory or program the private directories would hide."""
        if Namespace.MOUNT not in namespaces:
            return
        for what, path in (("working directory", cwd), ("program", executable)):
            real = os.path.realpath(path)
            for d in self.dirs:
                if real == d or real.startswith(d + "/"):
                    raise SpawnFailed(
                        f"{what} {path!r} is in {d}, which is private to a job with mount "
                        "isolation: put it elsewhere, or start the job without mount isolation"
                    )

    def probe(self, namespaces: frozenset[Namespace]) -> str:
        """Run the real chain with ``namespaces`` once: "" if it works, else why not."""
        if self.unshare is None:
            return "unshare (util-linux) not found"
        if namespaces & MOUNTING and self.mount is None:
            return "mount (util-linux) not found"
        if Namespace.PID in namespaces and self.timeout is None:
            return "timeout (coreutils) not found"
        argv = self.command(namespaces, "probe", [SHELL, "-c", "exit 0"])
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env={"PATH": SYSTEM_PATH}, cwd="/", timeout=PROBE_TIMEOUT,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if done.returncode == 0:
            return ""
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"

    def detect(self) -> Availability:
        """What works here: all at once (one run, the usual case), else one at a time."""
        if not self.probe(ALL):
            return Availability(ALL)
        reasons = {ns: self.probe(frozenset({ns})) for ns in ORDER}
        return Availability(frozenset(ns for ns, why in reasons.items() if not why),
                            {ns: why for ns, why in reasons.items() if why})


@dataclass
class Isolator:
    """What the manager and the supervisor use: the policy, this host's namespaces, and the
    launcher that builds the chain (None: isolation is not set up, nothing is available)."""

    policy: IsolationPolicy = field(default_factory=IsolationPolicy)
    availability: Availability = field(default_factory=Availability)
    launcher: Launcher | None = None

    def effective(self, request: frozenset[Namespace] | None, role: Role) -> frozenset[Namespace]:
        return self.policy.effective(request, role, self.availability)

    def wrap(
        self,
        namespaces: frozenset[Namespace],
        job_id: str,
        argv: list[str],
        cwd: str,
        executable: str,
    ) -> list[str]:
        """``argv`` as the command that runs it in ``namespaces``; SpawnFailed if it cannot."""
        if self.launcher is None:
            raise SpawnFailed("isolation is not set up")
        self.launcher.check_paths(namespaces, cwd, executable)
        return self.launcher.command(namespaces, job_id, argv)
