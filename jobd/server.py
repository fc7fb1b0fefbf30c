"""The daemon: TLS context, job manager and gRPC server under one trio nursery, and shutdown.

Shutdown, on SIGTERM or SIGINT: stop accepting connections and new jobs, stop every job with
the usual escalation, let every stream send its last bytes and final status, close the
server, exit. A second signal skips the grace periods and the stream drain.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace

import trio

from jobd.api import serving
from jobd.api.audit import AuditLog
from jobd.api.connections import Listener
from jobd.api.keyfile import check_private
from jobd.api.metrics import Metrics
from jobd.api.metrics import serve as serve_metrics
from jobd.api.service import JobService
from jobd.api.tls import TLSConfigError, load_crl, server_context
from jobd.cgroups import CONTROLLERS, CgroupBackend, NoneBackend, detect
from jobd.config import Config, ConfigError, cgroup_parent_for
from jobd.jobs.manager import JobManager
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import Store
from jobd.launch import binary, private, probe
from jobd.launch.isolator import Isolator
from jobd.launch.seccomp import SeccompError
from jobd.model.job import LimitRequest
from jobd.model.namespaces import names
from jobd.notify import notify
from jobd.policy.accounts import shared_without_pid_namespace
from jobd.policy.auth import Role
from jobd.policy.ceilings import Host, builtin_maxima, merge_maxima
from jobd.policy.current import CurrentPolicy, Policy
from jobd.policy.isolation import DAEMON_OOM_SCORE_ADJ
from jobd.policy.limits import LimitPolicy
from jobd.policy.revocation import revoked_serials

log = logging.getLogger(__name__)

# How long finished jobs' streams may take to deliver their last bytes to slow clients.
STREAM_DRAIN_TIMEOUT = 5.0


def detect_cgroups(config: Config) -> CgroupBackend:
    if not config.cgroups:
        log.info("cgroups: disabled by configuration")
        return NoneBackend("disabled by configuration (cgroups = false, --no-cgroups)")
    backend = detect(config.cgroup_parent or cgroup_parent_for(config.state_dir),
                     leave_own_group=True)
    missing = sorted(CONTROLLERS - backend.controllers)
    log.info("cgroups: %s backend; available: %s", backend.name,
             ", ".join(sorted(backend.controllers)) or "nothing")
    if missing:
        log.warning("cgroup features unavailable (jobs run without them): %s; see jobd --check",
                    ", ".join(missing))
    return backend


def detect_isolation(config: Config) -> Isolator:
    """Which namespaces work here (one probe run of the launcher), and which directories
    each job with a mount namespace gets private; one warning for role defaults that cannot
    be given (a role that requires them cannot start jobs)."""
    log.info("%s", binary.describe())  # tried now, not at the first start (~1 ms)
    found = private.find(exclude=[str(config.state_dir)])
    if not found.complete:
        log.warning("private directories: the search for world-writable directories stopped "
                    "at its budget; found so far: %s", ", ".join(found.directories))
    availability = probe.detect(found.directories)
    log.info("isolation: namespaces available: %s; read-only file system: %s; private "
             "directories: %s", names(availability.available),
             "yes" if availability.read_only else "no", ", ".join(found.directories) or "none")
    dropped = config.isolation.unavailable_defaults(availability)
    if dropped:
        log.warning("isolation unavailable here: %s; see jobd --check", "; ".join(
            f"the {role.value} role requires {names(ns)}: its jobs cannot start"
            if ns & config.isolation.rule(role).required
            else f"the {role.value} role's default {names(ns)}: its jobs run without it"
            for role, ns in dropped.items()))
    for warning in shared_without_pid_namespace(config.run_as, config.isolation,
                                                availability.available):
        log.warning("run as: %s", warning)
    isolator = Isolator(config.isolation, availability, found.directories)
    try:
        isolator.prepare()
    except SeccompError as exc:
        raise ConfigError(f"[isolation]: syscall filter: {exc}") from None
    return isolator


def protect_daemon() -> None:
    """Make the kernel's OOM killer take any job before the daemon (jobs set their own
    score in their launcher, so they do not inherit this one)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(DAEMON_OOM_SCORE_ADJ))
    except OSError as exc:  # not root: the jobs' scores still put them first
        log.info("cannot protect jobd from the OOM killer: %s", exc.strerror)


def maxima(config: Config, host: Host) -> dict[Role, LimitRequest]:
    """The most each role's job may ask for: as configured, else what the ceilings imply."""
    return merge_maxima(config.limit_maxima, builtin_maxima(config.ceilings, host))


def apply_ceilings(config: Config, cgroups: CgroupBackend, host: Host) -> None:
    """The ceilings of all jobs (the parent group) and of each identity's slice."""
    jobs, each = config.ceilings.jobs(host), config.ceilings.each_identity(host)
    for problem in cgroups.configure(jobs, each):
        log.warning("ceilings: not in force: %s", problem)
    log.info("ceilings: all jobs together: %s; each identity's jobs together: %s",
             jobs.describe(), each.describe())


def reload_crl(config: Config, ssl_context: ssl.SSLContext, current: CurrentPolicy,
               listener: Listener) -> None:  # fmt: skip
    """SIGHUP: the CRL again, for every handshake from now on, every call from now on, and
    the connections its certificates have open."""
    if config.crl is None:
        return
    try:
        revoked = revoked_serials(config.crl)
        load_crl(ssl_context, config.crl)
    except (TLSConfigError, OSError, ValueError) as exc:
        log.error("SIGHUP received: keeping the CRL loaded before: %s", exc)
        return
    current.swap(replace(current.now, revoked=revoked))
    closed = listener.close_revoked(revoked)
    log.info("SIGHUP received: reloaded the CRL %s (%d revoked; %d open connection(s) of "
             "revoked certificates closed)", config.crl, len(revoked), closed)


def reload(config: Config, current: CurrentPolicy, cgroups: CgroupBackend) -> None:
    """SIGHUP: the role table, the limits and the quotas from the config file again, as one
    new Policy. Running jobs and streams are untouched (a lowered quota refuses only new
    ones); a file that does not load leaves everything as it was."""
    if config.config_file is None:
        log.info("SIGHUP received: no config file to reload")
        return
    fresh = Config()
    host = Host.read()
    try:
        fresh.apply_file(config.config_file)
        policy = replace(
            current.now, roles=fresh.roles, quotas=fresh.quotas, run_as=fresh.run_as,
            limits=replace(current.now.limits, defaults=fresh.limit_defaults,
                           maxima=maxima(fresh, host), io_devices=fresh.io_devices),
        )
        policy.limits.validate()
    except (ConfigError, ValueError) as exc:
        log.error("SIGHUP received: keeping the current configuration: %s", exc)
        return
    apply_ceilings(fresh, cgroups, host)
    current.swap(policy)
    log.info("SIGHUP received: reloaded identities and limits (with quotas and accounts) from %s",
             config.config_file)


def _raise_fd_limit() -> None:
    # Each running job holds about three descriptors: at scale, descriptors run out first.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open file limit raised from %d to %d", soft, hard)


def _format_addr(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(
    config: Config, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    check_private(config.key or config.cert)
    ssl_context = server_context(config.cacert, config.cert, config.key, config.crl)
    _raise_fd_limit()
    # What start-up opens, closed in reverse order however serving ends (or fails to start).
    async with contextlib.AsyncExitStack() as resources:
        state = resources.enter_context(StateDir(config.state_dir))
        store = resources.enter_context(Store(state.database))
        cgroups = detect_cgroups(config)
        host = Host.read()
        apply_ceilings(config, cgroups, host)
        limits = LimitPolicy(config.limit_defaults, maxima(config, host), str(state.path),
                             config.io_devices)
        try:
            limits.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        revoked = frozenset[int]()
        if config.crl is not None:
            try:
                revoked = revoked_serials(config.crl)
            except (OSError, ValueError) as exc:
                raise TLSConfigError(f"cannot read CRL {config.crl}: {exc}") from None
        current = CurrentPolicy(Policy(config.roles, revoked, limits, config.quotas,
                                       config.run_as))  # fmt: skip
        isolator = detect_isolation(config)
        protect_daemon()
        manager = JobManager(
            state, store, config.grace, config.max_output, cgroups, current, config.retention,
            isolator,
        )
        metrics = Metrics()
        audit = resources.enter_context(
            AuditLog.open(config.audit_log or config.state_dir / "audit.log"))
        service = JobService(manager, metrics, audit, config.connections.request_timeout)
        await _serve_service(config, ssl_context, manager, service, metrics, task_status)


async def _serve_service(
    config: Config,
    ssl_context: ssl.SSLContext,
    manager: JobManager,
    service: JobService,
    metrics: Metrics,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with serving.asyncio_loop(), trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            if config.metrics is not None:
                await nursery.start(serve_metrics, metrics, *config.metrics)
            api = serving.build(service, ssl_context, config.connections, metrics)
            listener = api.listener
            bound = await nursery.start(listener.serve, *config.listen)
            addrs = [_format_addr(addr) for addr in bound]
            listening = "listening on " + ", ".join(addrs)
            log.info("%s", listening)
            notify(f"READY=1\nSTATUS={listening}")  # STATUS: what `systemctl status` shows
            task_status.started(addrs)

            async for signum in signals:
                if signum == signal.SIGHUP:
                    notify("RELOADING=1")
                    reload_crl(config, ssl_context, manager.policy, listener)
                    reload(config, manager.policy, manager.cgroups)
                    notify("READY=1")
                    continue
                log.info("%s received: shutting down", signal.Signals(signum).name)
                break
            api.stop_serving()
            notify("STOPPING=1")
            await _shutdown(listener, manager, service, signals)
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _shutdown(
    listener: Listener, manager: JobManager, service: JobService, signals: AsyncIterator[int]
) -> None:
    listener.stop_accepting()
    async with trio.open_nursery() as nursery:
        drain = trio.CancelScope()

        async def hurry() -> None:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    continue  # too late to reload anything
                log.warning("%s received again: killing every job now", signal.Signals(signum).name)
                manager.kill_all_now()
                drain.cancel()

        nursery.start_soon(hurry)
        await manager.shutdown()
        with drain, trio.move_on_after(STREAM_DRAIN_TIMEOUT):
            await service.wait_streams_idle()
        nursery.cancel_scope.cancel()
    listener.close()
    await listener.wait_closed()
