"""Isolation without root: the policy (role defaults, opt-out and network rules, unavailable
namespaces), the config tables, the spawn chain jobd builds, availability detection with
stand-in tools, the API and history round trips, and jobctl's options and rendering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers_unit import config_from, open_manager

from jobctl import cli, commands, render
from jobd.__main__ import check_report
from jobd.api.convert import job_to_pb, spec_from_pb
from jobd.config import Config, ConfigError
from jobd.jobs.store import Store
from jobd.launch import binary, probe, status
from jobd.launch.isolator import Isolator
from jobd.launch.plan import (
    SH_SCRIPT,
    Chain,
    Plan,
    build_chain,
    fallback_argv,
    launcher_argv,
    unshare_flags,
)
from jobd.launch.system import SHELL
from jobd.model.errors import FailedPrecondition, PermissionDenied, SpawnFailed
from jobd.model.job import Job, JobSpec
from jobd.model.namespaces import ALL, NONE, Namespace, names
from jobd.policy.accounts import Account
from jobd.policy.auth import Role
from jobd.policy.isolation import Availability, IsolationPolicy, RoleIsolation, parse_names
from jobd.policy.syscalls import FilterSpec
from jobd.v1 import jobs_pb2 as pb

PID, MOUNT, NET, UTS, IPC = (Namespace.PID, Namespace.MOUNT, Namespace.NETWORK, Namespace.UTS,
                             Namespace.IPC)  # fmt: skip
EVERYTHING = Availability(ALL, read_only=True, read_only_reason="", seccomp_reason="")


def ns(*items: Namespace) -> frozenset[Namespace]:
    return frozenset(items)


# --- names ----------------------------------------------------------------------------------


def test_names_are_listed_in_one_order() -> None:
    assert names({IPC, PID, NET}) == "pid, network, ipc"
    assert names(ALL) == "pid, mount, network, uts, ipc"
    assert names(NONE) == "none"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", ALL),
        ("none", NONE),
        ([], NONE),
        (["pid", "net"], ns(PID, NET)),
        (["network", "network", "ipc"], ns(NET, IPC)),
        (["pid", "mount", "network", "uts", "ipc"], ALL),
    ],
)
def test_parse_names(value: object, expected: frozenset[Namespace]) -> None:
    assert parse_names(value, "here") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["pid", "user"], "here: unknown namespace 'user' (known: pid, mount, network, uts, ipc)"),
        ("pid", 'here: expected a list of namespaces, "all" or "none"'),
        ([1], 'here: expected a list of namespaces, "all" or "none"'),
        (True, 'here: expected a list of namespaces, "all" or "none"'),
    ],
)
def test_parse_names_refuses_what_it_does_not_know(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_names(value, "here")
    assert str(info.value) == message


# --- the policy -----------------------------------------------------------------------------


def test_builtin_roles_user_fully_isolated_admin_not() -> None:
    policy = IsolationPolicy()
    assert policy.effective(None, Role.USER, EVERYTHING) == ALL
    assert policy.effective(None, Role.ADMIN, EVERYTHING) == NONE
    user = policy.rule(Role.USER)
    assert (user.allow_opt_out, user.allow_network, user.required) == (False, False, ALL)
    admin = policy.rule(Role.ADMIN)
    assert (admin.allow_opt_out, admin.allow_network, admin.required) == (True, True, NONE)


@pytest.mark.parametrize(
    ("role", "request_", "expected"),
    [
        (Role.ADMIN, ns(PID), ns(PID)),
        (Role.ADMIN, ALL, ALL),
        (Role.ADMIN, NONE, NONE),
        (Role.USER, ALL, ALL),
    ],
)
def test_a_request_is_granted_as_asked(
    role: Role, request_: frozenset[Namespace], expected: frozenset[Namespace]
) -> None:
    assert IsolationPolicy().effective(request_, role, EVERYTHING) == expected


@pytest.mark.parametrize(
    ("request_", "lacking"),
    [(NONE, "pid, mount, network, uts, ipc"), (ns(PID, MOUNT), "network, uts, ipc"),
     (ALL - {UTS}, "uts")],
)  # fmt: skip
def test_a_user_may_not_ask_for_less_than_its_default(
    request_: frozenset[Namespace], lacking: str
) -> None:
    with pytest.raises(PermissionDenied) as info:
        IsolationPolicy().effective(request_, Role.USER, EVERYTHING)
    assert str(info.value) == (
        f"isolation: the user role may not run jobs without {lacking} isolation: its default "
        "isolation (pid, mount, network, uts, ipc) may not be reduced"
    )


def test_a_role_allowed_to_opt_out_still_needs_network_isolation_without_allow_network() -> None:
    policy = IsolationPolicy({Role.USER: RoleIsolation(ALL, allow_opt_out=True,
                                                       allow_network=False)})  # fmt: skip
    assert policy.effective(ns(NET), Role.USER, EVERYTHING) == ns(NET)
    assert policy.effective(ns(PID, NET), Role.USER, EVERYTHING) == ns(PID, NET)
    with pytest.raises(PermissionDenied) as info:
        policy.effective(ns(PID, MOUNT), Role.USER, EVERYTHING)
    assert str(info.value) == (
        "isolation: the user role may not run jobs without network isolation: it may not use "
        "the host's network"
    )


def test_allow_network_false_needs_network_in_the_default() -> None:
    with pytest.raises(ValueError, match="allow_network = false needs network in default"):
        RoleIsolation(ns(PID), allow_network=False)


def test_asking_for_an_unavailable_namespace_fails_naming_it_and_why() -> None:
    here = Availability(ns(PID, MOUNT, UTS), {NET: "unshare failed: Operation not permitted",
                                              IPC: "no ipc here"})  # fmt: skip
    for role in Role:
        with pytest.raises(FailedPrecondition) as info:
            IsolationPolicy().effective(ns(PID, NET, IPC), role, here)
        suffix = "; the user role requires them" if role is Role.USER else ""
        assert str(info.value) == (
            "isolation: network, ipc namespaces not available on this server (network: "
            f"unshare failed: Operation not permitted; ipc: no ipc here){suffix}"
        ) or role is Role.USER
    with pytest.raises(FailedPrecondition, match=r"^isolation: uts namespace not available .*"
                       r"\(uts: isolation is not set up\)$"):  # fmt: skip
        IsolationPolicy().effective(ns(UTS), Role.ADMIN, Availability())


def test_what_a_role_requires_is_never_dropped() -> None:
    here = Availability(ns(PID, MOUNT, UTS), {NET: "no net", IPC: "no ipc"}, read_only=True)
    policy = IsolationPolicy()
    for request in (None, ns(PID, MOUNT, UTS), ALL):
        with pytest.raises(FailedPrecondition) as info:
            policy.effective(request, Role.USER, here)
        assert str(info.value).startswith("isolation: network, ipc namespaces not available "
                                          "on this server (network: no net; ipc: no ipc)")
    with pytest.raises(FailedPrecondition, match=r"the user role requires them$"):
        policy.effective(None, Role.USER, Availability())
    assert policy.unavailable_defaults(here) == {Role.USER: ns(NET, IPC)}
    assert policy.unavailable_defaults(EVERYTHING) == {}


def test_a_default_the_role_may_do_without_is_dropped() -> None:
    here = Availability(ns(PID, MOUNT, UTS), {NET: "no", IPC: "no"})
    policy = IsolationPolicy({Role.USER: RoleIsolation(ALL)})  # may opt out, may use the net
    assert policy.effective(None, Role.USER, here) == ns(PID, MOUNT, UTS)
    assert policy.effective(None, Role.USER, Availability()) == NONE


def test_a_read_only_file_system_this_host_cannot_make_is_refused() -> None:
    here = Availability(ALL, read_only=False, read_only_reason="no mount_setattr")
    with pytest.raises(FailedPrecondition, match=r"read-only file system, which this server "
                       r"cannot make \(no mount_setattr\)"):  # fmt: skip
        IsolationPolicy().effective(None, Role.USER, here)
    assert IsolationPolicy().effective(ns(MOUNT), Role.ADMIN, here) == ns(MOUNT)


def test_availability_describes_what_is_missing() -> None:
    here = Availability(ns(PID, UTS), {MOUNT: "mount refused"}, read_only_reason="no way")
    assert here.describe().splitlines() == [
        "isolation: namespaces available: pid, uts",
        "  mount: unavailable: mount refused",
        "  network: unavailable: isolation is not set up",
        "  ipc: unavailable: isolation is not set up",
        "isolation: read-only file system: unavailable: no way",
        "isolation: syscall filters: unavailable: isolation is not set up",
    ]
    assert EVERYTHING.describe().splitlines() == [
        "isolation: namespaces available: pid, mount, network, uts, ipc",
        "isolation: read-only file system: available",
        "isolation: syscall filters: available",
    ]


# --- configuration --------------------------------------------------------------------------


def test_config_defaults_are_the_builtin_roles() -> None:
    assert Config().isolation == IsolationPolicy()


def test_config_role_tables(tmp_path: Path) -> None:
    config = config_from(tmp_path, """
        [isolation.user]
        default = ["pid", "net", "mount"]
        allow_opt_out = true
        [isolation.admin]
        default = "all"
        allow_network = true
    """)  # fmt: skip
    user, admin = config.isolation.rule(Role.USER), config.isolation.rule(Role.ADMIN)
    assert user == RoleIsolation(ns(PID, NET, MOUNT), allow_opt_out=True, allow_network=False,
                                 read_only=True, oom_score_adj=500,
                                 syscalls=FilterSpec())  # those three built in
    assert admin == RoleIsolation(ALL, allow_opt_out=True, allow_network=True)
    assert config.isolation.effective(ns(NET), Role.USER, EVERYTHING) == ns(NET)
    assert config.isolation.effective(None, Role.ADMIN, EVERYTHING) == ALL


def test_config_keys_left_out_keep_the_builtin_values(tmp_path: Path) -> None:
    config = config_from(tmp_path, "[isolation.user]\nallow_opt_out = true\n")
    assert config.isolation.rule(Role.USER) == RoleIsolation(ALL, True, False, read_only=True,
                                                             oom_score_adj=500,
                                                             syscalls=FilterSpec())
    assert config.isolation.rule(Role.ADMIN) == RoleIsolation(NONE, True, True)


def test_config_user_without_isolation(tmp_path: Path) -> None:
    config = config_from(tmp_path, '[isolation.user]\ndefault = "none"\nallow_network = true\n')
    assert config.isolation.effective(None, Role.USER, EVERYTHING) == NONE
    assert config.isolation.effective(ns(PID), Role.USER, EVERYTHING) == ns(PID)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[isolation.guest]\ndefault = []\n",
         "[isolation.guest]: no such role (known: admin, user)"),
        ("[isolation.user]\ndefault = [\"pid\", \"time\"]\n",
         "[isolation.user]: default: unknown namespace 'time' (known: pid, mount, network, "
         "uts, ipc)"),
        ("[isolation.user]\nallow_network = \"yes\"\n",
         "[isolation.user]: allow_network must be true or false"),
        ("[isolation.user]\nallow_opt_out = 1\n",
         "[isolation.user]: allow_opt_out must be true or false"),
        ("[isolation.user]\nnetwork = true\n", "[isolation.user]: unknown setting(s) network"),
        ("[isolation.user]\ndefault = [\"pid\"]\n",
         "[isolation.user]: allow_network = false needs network in default (add it, or allow "
         "the network)"),
        ("isolation = true\n", "[isolation] must hold [isolation.ROLE] tables"),
        ("[isolation]\nuser = 1\n", "[isolation.user] must be a table"),
    ],
)  # fmt: skip
def test_config_errors_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'jobd.toml'}: {message}"


def test_check_report_lists_policy_and_availability(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path / "state", cgroups=False)
    lines = check_report(config).splitlines()
    assert any(line.startswith("isolation for user: default pid, mount, network, uts, ipc, may "
                               "not opt out, no host network, file system read-only")
               for line in lines)
    assert ("isolation for admin: default none, host network allowed, oom_score_adj 0, "
            "syscall filter none") in lines
    assert "syscall filter for user: default" in lines
    assert any(line.startswith("isolation: namespaces available: ") for line in lines)


# --- the launcher's plan -------------------------------------------------------------------


def test_unshare_flags_per_namespace() -> None:
    assert unshare_flags(ALL) == 0x20000000 | 0x00020000 | 0x40000000 | 0x04000000 | 0x08000000
    # /proc and /sys are mounted in a mount namespace of the job's own, even without MOUNT.
    assert unshare_flags(ns(PID)) == 0x20000000 | 0x00020000
    assert unshare_flags(ns(NET)) == 0x40000000 | 0x00020000
    assert unshare_flags(ns(UTS, IPC)) == 0x04000000 | 0x08000000


def test_the_plan_of_a_user_job() -> None:
    account = Account("nobody", 65534, 65534, "nogroup", (7, 8))
    plan = Plan(procs_files=("/cg/a/cgroup.procs",), oom_score_adj=500, namespaces=ALL,
                hostname="job-0123abcd", read_only=True, writable=("/srv/x",),
                private_dirs=("/tmp", "/var/tmp"), tmpfs_size=1 << 30, account=account,
                cwd="/work dir", search_path="/bin")  # fmt: skip
    assert plan.has_init and plan.needs_launcher
    assert launcher_argv("/l", plan, 9, ["sh", "-c", "x"]) == [
        "/l", "-s", "9", "-c", "/cg/a/cgroup.procs", "-o", "500",
        "-n", str(unshare_flags(ALL)), "-h", "job-0123abcd", "-L", "-S", "-P",
        "-R", "-D", "-w", "/srv/x", "-t", "/tmp", "-t", "/var/tmp", "-z", str(1 << 30),
        "-u", "65534", "-g", "65534", "-G", "7,8", "-d", "/work dir", "-p", "/bin",
        "--", "sh", "-c", "x",
    ]  # fmt: skip


def test_the_plan_of_a_plain_job() -> None:
    plan = Plan(cwd="/", search_path="")
    assert not plan.has_init and not plan.needs_launcher
    assert launcher_argv("/l", plan, 3, ["true"]) == ["/l", "-s", "3", "-d", "/", "-p", "",
                                                      "--", "true"]  # fmt: skip
    # Without a mount namespace nothing is mounted, whatever else the plan says.
    quiet = Plan(namespaces=ns(UTS), hostname="h", read_only=True, private_dirs=("/tmp",))
    assert launcher_argv("/l", quiet, 3, ["true"])[3:7] == ["-n", str(unshare_flags(ns(UTS))),
                                                            "-h", "h"]  # fmt: skip
    assert "-R" not in launcher_argv("/l", quiet, 3, ["true"])


def test_the_stand_in_only_joins_cgroups_and_sets_the_oom_score() -> None:
    plan = Plan(procs_files=("/cg/cgroup.procs",), oom_score_adj=500)
    argv = fallback_argv(plan, ["true"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["jobd-shim", "500",
                                                          "/cg/cgroup.procs", "--", "true"]
    with pytest.raises(AssertionError):
        fallback_argv(Plan(namespaces=ns(PID)), ["true"])


def test_a_failed_launch_is_told_in_a_sentence() -> None:
    def told(line: str, argv0: str = "prog", cwd: str = "/w", who: str = "",
             private: tuple[str, ...] = ()) -> str:  # fmt: skip
        return status.failure_message(status.parse(line.encode()), argv0, cwd, who, private)

    assert told("cwd\t13\t/w", who=" (as nobody)") == (
        "working directory '/w' is not accessible (permission denied) (as nobody)")
    assert told("cwd\t2\t/tmp/x", cwd="/tmp/x", private=("/tmp",)) == (
        "working directory '/tmp/x' does not exist (/tmp is private to each job: it starts "
        "empty)")
    assert told("exec\t8\tprog") == f"cannot execute 'prog': {status.NOT_EXECUTABLE}"
    assert told("exec\t13\t/bin/prog") == "cannot execute 'prog': permission denied (/bin/prog)"
    assert told("notfound\t2\t/bin") == "cannot execute 'prog': command not found in PATH=/bin"
    assert told("mount\t1\t/proc") == (
        "cannot set up the job (mount /proc): operation not permitted")
    assert told("garbage") == "cannot set up the job (unknown garbage): unknown error"


# --- availability -----------------------------------------------------------------------------


def test_without_the_launcher_nothing_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary, "compiled", lambda: None)
    found = probe.detect()
    assert found.available == NONE and not found.read_only
    assert {found.why(n) for n in Namespace} == {binary.NOT_BUILT}


def test_without_root_nothing_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.os, "geteuid", lambda: 1000)
    found = probe.detect()
    assert found.available == NONE
    assert "needs root" in found.why(PID) and "needs root" in found.read_only_reason


def test_what_fails_is_found_one_part_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(launcher: str, namespaces: frozenset[Namespace], *, read_only: bool = False,
             private_dirs: tuple[str, ...] = (), filter_fd: int | None = None) -> str:
        if NET in namespaces:
            return "cannot set up the job (unshare): operation not permitted"
        if filter_fd is not None and not namespaces:
            return "cannot set up the job (seccomp install): invalid argument"
        return "no mount_setattr" if read_only else ""

    monkeypatch.setattr(binary, "compiled", lambda: "/l")
    monkeypatch.setattr(probe.os, "geteuid", lambda: 0)
    monkeypatch.setattr(probe, "probe", fake)
    found = probe.detect()
    assert found.available == ALL - {NET}
    assert found.why(NET) == "cannot set up the job (unshare): operation not permitted"
    assert (found.read_only, found.read_only_reason) == (False, "no mount_setattr")
    assert found.seccomp_reason == "cannot set up the job (seccomp install): invalid argument"


def test_the_real_launcher_where_it_works() -> None:
    if binary.compiled() is None or os.geteuid() != 0:
        pytest.skip("needs root and the compiled launcher")
    assert probe.detect(("/tmp",)) == EVERYTHING


# --- through the manager, the API and the history -------------------------------------------


async def test_a_refused_isolation_records_nothing(tmp_path: Path) -> None:
    isolator = Isolator(availability=Availability(ns(PID), {NET: "not here"}))
    async with open_manager(tmp_path / "state", isolation=isolator) as manager:
        with pytest.raises(FailedPrecondition, match="network namespace not available"):
            await manager.start("admin", JobSpec(("true",), isolation=ns(NET)), Role.ADMIN)
        # What a user's jobs require cannot be given here: none of them starts.
        with pytest.raises(FailedPrecondition, match=r"the user role requires them$"):
            await manager.start("alice", JobSpec(("true",)), Role.USER)
        assert (await manager.jobs()).jobs == []
    async with open_manager(tmp_path / "state2", isolation=Isolator(
            availability=EVERYTHING)) as manager:  # fmt: skip
        with pytest.raises(PermissionDenied, match="without pid, mount, network, uts, ipc"):
            await manager.start("alice", JobSpec(("true",), isolation=NONE), Role.USER)
        assert (await manager.jobs()).jobs == []
    for state in ("state", "state2"):
        assert list((tmp_path / state / "output").iterdir()) == []


async def test_an_unisolated_job_never_touches_the_launcher(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", isolation=Isolator()) as manager:
        job = await manager.start("admin", JobSpec(("true",)), Role.ADMIN)
        assert job.isolation == NONE
        done = await manager.wait_finished(job)
        assert done.result is not None and done.result.exit_code == 0


def test_request_presence_tells_default_from_none() -> None:
    assert spec_from_pb(pb.StartJobRequest(argv=["true"])).isolation is None
    assert spec_from_pb(pb.StartJobRequest(argv=["true"], isolation=pb.Isolation())).isolation \
        == NONE
    asked = pb.StartJobRequest(argv=["true"], isolation=pb.Isolation(pid=True, network=True))
    assert spec_from_pb(asked).isolation == ns(PID, NET)


def test_job_reports_its_isolation_and_the_history_keeps_it(tmp_path: Path) -> None:
    job = Job(id="j1", owner="alice", spec=JobSpec(("true",)), isolation=ns(PID, MOUNT, IPC))
    assert job_to_pb(job).isolation == pb.Isolation(pid=True, mount=True, ipc=True)
    plain = Job(id="j2", owner="alice", spec=JobSpec(("true",)))
    assert job_to_pb(plain).HasField("isolation")  # present, all false: none
    assert job_to_pb(plain).isolation == pb.Isolation()
    store = Store(tmp_path / "jobs.db")
    try:
        store.save(job)
        store.save(plain)
        again = store.get("j1")
        assert again is not None and again.isolation == ns(PID, MOUNT, IPC)
        plain_again = store.get("j2")
        assert plain_again is not None and plain_again.isolation == NONE
    finally:
        store.close()


# --- jobctl ---------------------------------------------------------------------------------


def start_args(*words: str) -> object:
    return cli.build_parser({}).parse_args(["start", *words, "--", "true"])


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ((), None),
        (("--no-isolate",), pb.Isolation()),
        (("--isolate", "all"), pb.Isolation(pid=True, mount=True, network=True, uts=True,
                                            ipc=True)),
        (("--isolate", "pid,net"), pb.Isolation(pid=True, network=True)),
        (("--isolate", "PID, mount ,uts,ipc"), pb.Isolation(pid=True, mount=True, uts=True,
                                                            ipc=True)),
        (("--isolate", "network"), pb.Isolation(network=True)),
    ],
)  # fmt: skip
def test_jobctl_isolation_options(words: tuple[str, ...], expected: pb.Isolation | None) -> None:
    chosen = commands.isolation_of(start_args(*words))  # type: ignore[arg-type]
    assert chosen == expected
    if expected is not None:
        assert chosen is not None and chosen.ByteSize() == expected.ByteSize()


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (("--isolate", "pid,user"), "unknown namespace 'user': expected pid, mount, net, uts, "
                                    "ipc or all"),
        (("--isolate", ""), "unknown namespace ''"),
        (("--isolate", "pid", "--no-isolate"), "not allowed with argument"),
    ],
)  # fmt: skip
def test_jobctl_refuses_bad_isolation_options(
    words: tuple[str, ...], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        start_args(*words)
    assert info.value.code == cli.EXIT_USAGE
    assert error in capsys.readouterr().err


def test_jobctl_status_shows_the_isolation() -> None:
    job = pb.Job(id="j1", owner="alice", argv=["true"], state=pb.JOB_STATE_RUNNING)
    assert "Isolation" not in render.job_details(job)  # an older server says nothing
    job.isolation.SetInParent()
    assert "Isolation: none\n" in render.job_details(job) + "\n"
    job.isolation.pid = job.isolation.network = True
    assert "Isolation: pid, network\n" in render.job_details(job) + "\n"
    assert render.job_to_dict(job)["isolation"] == {"pid": True, "mount": False,
                                                    "network": True, "uts": False,
                                                    "ipc": False}  # fmt: skip


# --- the launch chain, from a table -----------------------------------------------------------

NOBODY = Account("nobody", 65534, 65534, "nogroup", (), "/")
ENV = {"PATH": "/usr/bin:/bin", "JOBD_JOB_ID": "j-1"}


@pytest.mark.parametrize(
    ("plan", "launcher", "argv", "executable", "cwd", "reports", "keep"),
    [
        # The launcher, whenever it is built: every plan goes through it.
        (Plan(cwd="/srv"), "/l", ["/l", "-s", "7", "-d", "/srv", "-p", "", "--", "true"], "/l",
         "/", True, ()),
        (Plan(filter_fd=5), "/l", ["/l", "-s", "7", "-d", "/", "-p", "", "-f", "5", "--", "true"],
         "/l", "/", True, (5,)),
        (Plan(account=NOBODY), "/l", ["/l", "-s", "7", "-u", "65534", "-g", "65534", "-d", "/",
                                      "-p", "", "--", "true"], "/l", "/", True, ()),
        # Without it: the shell stand-in joins the groups and sets the score...
        (Plan(procs_files=("/g/cgroup.procs",), cwd="/srv"), None,
         [SHELL, "-c", SH_SCRIPT, "jobd-shim", "", "/g/cgroup.procs", "--", "true"], SHELL,
         "/srv", False, ()),
        (Plan(oom_score_adj=500), None, [SHELL, "-c", SH_SCRIPT, "jobd-shim", "500", "--", "true"],
         SHELL, "/", False, ()),
        # ...and with nothing to do first, the command runs itself, found on the job's PATH.
        (Plan(cwd="/tmp"), None, ["true"], None, "/tmp", False, ()),
    ],
)  # fmt: skip
def test_the_chain_is_built_from_the_plan_alone(
    plan: Plan, launcher: str | None, argv: list[str], executable: str | None, cwd: str,
    reports: bool, keep: tuple[int, ...],
) -> None:
    chain = build_chain(plan, ["true"], ENV, launcher, status_fd=7)
    assert chain == Chain(tuple(argv), executable, ENV, cwd, reports, keep)


@pytest.mark.parametrize("plan", [Plan(namespaces=ns(PID)), Plan(account=NOBODY),
                                  Plan(filter_fd=5)])  # fmt: skip
def test_without_the_launcher_a_plan_that_needs_it_is_refused(plan: Plan) -> None:
    with pytest.raises(SpawnFailed, match="needs namespaces or another account, and it is gone"):
        build_chain(plan, ["true"], ENV, None, not_built="it is gone")
