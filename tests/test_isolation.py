"""Isolation without root: the policy (role defaults, opt-out and network rules, unavailable
namespaces), the config tables, the spawn chain jobd builds, availability detection with
stand-in tools, the API and history round trips, and jobctl's options and rendering."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers_unit import PROCESS_TIMEOUT, open_manager

from jobctl import cli, commands, render
from jobd.__main__ import check_report
from jobd.auth import Role
from jobd.config import Config, ConfigError
from jobd.convert import job_to_pb, spec_from_pb
from jobd.errors import FailedPrecondition, PermissionDenied, SpawnFailed
from jobd.isolation import (
    ALL,
    NONE,
    Availability,
    IsolationPolicy,
    Isolator,
    Launcher,
    Namespace,
    RoleIsolation,
    fstab_text,
    hostname_for,
    names,
    parse_names,
    unshare_flags,
)
from jobd.job import Job, JobSpec
from jobd.store import Store
from jobd.v1 import jobs_pb2 as pb

PID, MOUNT, NET, UTS, IPC = (Namespace.PID, Namespace.MOUNT, Namespace.NETWORK, Namespace.UTS,
                             Namespace.IPC)  # fmt: skip
EVERYTHING = Availability(ALL)


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
        assert str(info.value) == (
            "isolation: network, ipc namespaces not available on this server (network: "
            "unshare failed: Operation not permitted; ipc: no ipc here)"
        )
    with pytest.raises(FailedPrecondition, match=r"^isolation: uts namespace not available .*"
                       r"\(uts: isolation is not set up\)$"):  # fmt: skip
        IsolationPolicy().effective(ns(UTS), Role.ADMIN, Availability())


def test_unavailable_defaults_are_dropped_and_not_required() -> None:
    here = Availability(ns(PID, MOUNT, UTS), {NET: "no", IPC: "no"})
    policy = IsolationPolicy()
    assert policy.effective(None, Role.USER, here) == ns(PID, MOUNT, UTS)
    # What the host can give is all a user can be held to; less than that is still refused.
    assert policy.effective(ns(PID, MOUNT, UTS), Role.USER, here) == ns(PID, MOUNT, UTS)
    with pytest.raises(PermissionDenied, match="without mount isolation"):
        policy.effective(ns(PID, UTS), Role.USER, here)
    assert policy.unavailable_defaults(here) == {Role.USER: ns(NET, IPC)}
    assert policy.unavailable_defaults(EVERYTHING) == {}
    assert policy.effective(None, Role.USER, Availability()) == NONE


def test_availability_describes_what_is_missing() -> None:
    here = Availability(ns(PID, UTS), {MOUNT: "mount (util-linux) not found"})
    assert here.describe().splitlines() == [
        "isolation: namespaces available: pid, uts",
        "  mount: unavailable: mount (util-linux) not found",
        "  network: unavailable: isolation is not set up",
        "  ipc: unavailable: isolation is not set up",
    ]
    assert EVERYTHING.describe() == "isolation: namespaces available: pid, mount, network, uts, ipc"


# --- configuration --------------------------------------------------------------------------


def config_from(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "jobd.toml"
    path.write_text(text)
    config = Config()
    config.apply_file(path)
    return config


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
    assert user == RoleIsolation(ns(PID, NET, MOUNT), allow_opt_out=True, allow_network=False)
    assert admin == RoleIsolation(ALL, allow_opt_out=True, allow_network=True)
    assert config.isolation.effective(ns(NET), Role.USER, EVERYTHING) == ns(NET)
    assert config.isolation.effective(None, Role.ADMIN, EVERYTHING) == ALL


def test_config_keys_left_out_keep_the_builtin_values(tmp_path: Path) -> None:
    config = config_from(tmp_path, "[isolation.user]\nallow_opt_out = true\n")
    assert config.isolation.rule(Role.USER) == RoleIsolation(ALL, True, False)
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
    assert "isolation for user: default pid, mount, network, uts, ipc, may not opt out, no host "\
        "network" in lines
    assert "isolation for admin: default none, host network allowed" in lines
    assert any(line.startswith("isolation: namespaces available: ") for line in lines)


# --- the spawn chain ------------------------------------------------------------------------


def test_unshare_flags_per_namespace() -> None:
    assert unshare_flags(ALL) == [
        "--pid", "--mount", "--propagation", "private", "--net", "--uts", "--ipc",
    ]  # fmt: skip
    # /proc and /sys are mounted in a mount namespace of the job's own, even without MOUNT.
    assert unshare_flags(ns(PID)) == ["--pid", "--mount", "--propagation", "private"]
    assert unshare_flags(ns(NET)) == ["--mount", "--propagation", "private", "--net"]
    assert unshare_flags(ns(UTS, IPC)) == ["--uts", "--ipc"]


def test_fstab_mounts_proc_private_temporary_directories_and_a_fresh_sysfs() -> None:
    dirs = ("/tmp", "/var/tmp", "/dev/shm")
    assert fstab_text(ALL, dirs).splitlines() == [
        "jobd-proc /proc proc rw,nosuid,nodev,noexec 0 0",
        "jobd-tmp /tmp tmpfs rw,nosuid,nodev,mode=1777 0 0",
        "jobd-var-tmp /var/tmp tmpfs rw,nosuid,nodev,mode=1777 0 0",
        "jobd-dev-shm /dev/shm tmpfs rw,nosuid,nodev,mode=1777 0 0",
        "jobd-sysfs /sys sysfs rw,nosuid,nodev,noexec 0 0",
    ]
    assert fstab_text(ns(NET), dirs) == "jobd-sysfs /sys sysfs rw,nosuid,nodev,noexec 0 0\n"
    assert fstab_text(ns(PID, UTS), dirs) == "jobd-proc /proc proc rw,nosuid,nodev,noexec 0 0\n"
    assert fstab_text(ns(UTS, IPC), dirs) == ""


def launcher(tmp_path: Path, unshare: str | None = "/usr/bin/unshare",
             mount: str | None = "/usr/bin/mount",
             timeout: str | None = "/usr/bin/timeout") -> Launcher:  # fmt: skip
    result = Launcher(unshare, mount, timeout, tmp_path / "isolation")
    result.dirs = ("/tmp", "/var/tmp", "/dev/shm")
    result.prepare()
    return result


def test_prepare_writes_one_fstab_per_combination_that_mounts(tmp_path: Path) -> None:
    launcher(tmp_path)
    written = sorted(p.name for p in (tmp_path / "isolation").iterdir())
    assert written == ["mount+network.fstab", "mount.fstab", "network.fstab",
                       "pid+mount+network.fstab", "pid+mount.fstab", "pid+network.fstab",
                       "pid.fstab"]  # fmt: skip


def test_command_runs_the_setup_as_the_jobs_first_process(tmp_path: Path) -> None:
    job_id = "0123abcd-0000-0000-0000-000000000000"
    argv = launcher(tmp_path).command(ALL, job_id, ["sh", "-c", "echo $$"])
    sep = argv.index("--")
    assert argv[:sep] == ["/usr/bin/unshare", *unshare_flags(ALL)]
    _, shell, dash_c, script, name, *command = argv[sep + 3 :]
    assert argv[sep + 1 : sep + 4] == ["/usr/bin/timeout", "--foreground", "0"]
    assert (shell, dash_c, name, command) == ("/bin/sh", "-c", "jobd-isolate",
                                              ["sh", "-c", "echo $$"])  # fmt: skip
    fstab = tmp_path / "isolation" / "pid+mount+network.fstab"
    assert fstab.read_text() == fstab_text(ALL, ("/tmp", "/var/tmp", "/dev/shm"))
    lines = script.splitlines()
    assert lines[0].startswith(f"/usr/bin/mount -a -T {fstab} || ")
    assert lines[1].startswith("echo 0x9 > /sys/class/net/lo/flags || ")
    assert lines[2].startswith("echo job-0123abcd > /proc/sys/kernel/hostname || ")
    assert lines[3] == 'exec "$@"'
    assert all("exit 125; }" in line for line in lines[:3])
    assert hostname_for(job_id) == "job-0123abcd"


def test_command_without_setup_execs_the_job_directly(tmp_path: Path) -> None:
    assert launcher(tmp_path).command(ns(IPC), "x", ["true"]) == [
        "/usr/bin/unshare", "--ipc", "--", "true"]  # fmt: skip
    # Without a PID namespace there is no waiter: the job is the process jobd started.
    mount_only = launcher(tmp_path).command(ns(MOUNT), "x", ["true"])
    assert "/usr/bin/timeout" not in mount_only and mount_only[-2:] == ["jobd-isolate", "true"]


def test_command_quotes_the_fstab_path(tmp_path: Path) -> None:
    odd = tmp_path / "it's here"
    odd.mkdir()
    script = launcher(odd).setup_script(ns(MOUNT), "x")
    assert f"-T {shlex.quote(str(odd / 'isolation' / 'mount.fstab'))} ||" in script


def test_paths_hidden_by_private_directories_are_refused(tmp_path: Path) -> None:
    chain = launcher(tmp_path)
    with pytest.raises(SpawnFailed) as info:
        chain.check_paths(ns(MOUNT), "/tmp/work", "/usr/bin/true")
    assert str(info.value) == (
        "working directory '/tmp/work' is in /tmp, which is private to a job with mount "
        "isolation: put it elsewhere, or start the job without mount isolation"
    )
    with pytest.raises(SpawnFailed, match=r"^program '/dev/shm/x' is in /dev/shm, "):
        chain.check_paths(ALL, "/", "/dev/shm/x")
    chain.check_paths(ns(MOUNT), "/", "/usr/bin/true")
    chain.check_paths(ns(MOUNT), "/tmpfoo", "/usr/bin/true")
    chain.check_paths(ALL - {MOUNT}, "/tmp", "/tmp/x")  # /tmp is the host's then


def test_isolator_without_a_launcher_cannot_wrap() -> None:
    with pytest.raises(SpawnFailed, match="isolation is not set up"):
        Isolator().wrap(ns(PID), "x", ["true"], "/", "/usr/bin/true")


# --- availability, with stand-in tools ------------------------------------------------------


def fake_tool(directory: Path, name: str, script: str) -> str:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_without_unshare_nothing_is_available(tmp_path: Path) -> None:
    found = launcher(tmp_path, unshare=None).detect()
    assert found.available == NONE
    assert {found.why(n) for n in Namespace} == {"unshare (util-linux) not found"}
    with pytest.raises(SpawnFailed, match="unshare"):
        launcher(tmp_path, unshare=None).command(ns(IPC), "x", ["true"])


def test_without_mount_only_the_namespaces_that_need_no_mounts_are_available(
    tmp_path: Path,
) -> None:
    # A stand-in unshare that accepts everything and runs nothing (the setup it was given
    # would set this host's name).
    unshare = fake_tool(tmp_path / "bin", "unshare", "exit 0\n")
    found = launcher(tmp_path, unshare=unshare, mount=None).detect()
    assert found.available == ns(UTS, IPC)
    assert {found.why(n) for n in (PID, MOUNT, NET)} == {"mount (util-linux) not found"}


def test_without_timeout_there_is_no_pid_namespace(tmp_path: Path) -> None:
    unshare = fake_tool(tmp_path / "bin", "unshare", "exit 0\n")
    found = launcher(tmp_path, unshare=unshare, timeout=None).detect()
    assert found.available == ALL - {PID}
    assert found.why(PID) == "timeout (coreutils) not found"


def test_a_namespace_the_kernel_refuses_is_found_and_explained(tmp_path: Path) -> None:
    real = shutil.which("unshare")
    if real is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare to run the real chain")
    if launcher(tmp_path).probe(ALL):
        pytest.skip("namespaces do not work here: " + launcher(tmp_path).probe(ALL))
    refusing = fake_tool(tmp_path / "bin", "unshare", f"""
case " $* " in
*" --net "*) echo "unshare: unshare failed: Operation not permitted" >&2; exit 1;;
esac
exec {real} "$@"
""")  # fmt: skip
    found = launcher(tmp_path, unshare=refusing).detect()
    assert found.available == ALL - {NET}
    assert found.why(NET) == "unshare: unshare failed: Operation not permitted"


def test_the_real_chain_where_it_works(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare to run the real chain")
    chain = Launcher.find(tmp_path / "isolation")
    chain.prepare()
    why = chain.probe(ALL)
    if why:
        pytest.skip(f"namespaces do not work here: {why}")
    script = "echo $$; hostname 2>/dev/null || cat /proc/sys/kernel/hostname; ls /sys/class/net"
    argv = chain.command(ALL, "feedbeef-1", ["/bin/sh", "-c", script])
    done = subprocess.run(argv, capture_output=True, timeout=PROCESS_TIMEOUT, cwd="/")
    assert done.returncode == 0, done
    assert done.stdout.decode().split() == ["1", "job-feedbeef", "lo"]
    exit_code = subprocess.run(chain.command(ALL, "x", ["/bin/sh", "-c", "exit 7"]),
                               timeout=PROCESS_TIMEOUT, cwd="/")  # fmt: skip
    assert exit_code.returncode == 7


# --- through the manager, the API and the history -------------------------------------------


async def test_a_refused_isolation_records_nothing(tmp_path: Path) -> None:
    isolator = Isolator(availability=Availability(ns(PID), {NET: "not here"}))
    async with open_manager(tmp_path / "state", isolation=isolator) as manager:
        with pytest.raises(FailedPrecondition, match="network namespace not available"):
            manager.start("admin", JobSpec(("true",), isolation=ns(NET)), Role.ADMIN)
        with pytest.raises(PermissionDenied, match="without pid isolation"):
            manager.start("alice", JobSpec(("true",), isolation=NONE), Role.USER)
        page = await manager.jobs()
        assert page.jobs == []
        assert list((tmp_path / "state" / "output").iterdir()) == []
        # Without a request the user gets what the host offers of its default: here it
        # cannot be set up, so the job is recorded as failed to start, with that isolation.
        with pytest.raises(SpawnFailed, match=r"^isolation is not set up"):
            manager.start("alice", JobSpec(("true",)), Role.USER)
        (job,) = (await manager.jobs()).jobs
        assert job.isolation == ns(PID)
        assert job.result is not None and job.result.message == "isolation is not set up"


async def test_an_unisolated_job_never_touches_the_launcher(tmp_path: Path) -> None:
    async with open_manager(tmp_path / "state", isolation=Isolator()) as manager:
        job = manager.start("admin", JobSpec(("true",)), Role.ADMIN)
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
