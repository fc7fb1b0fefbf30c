"""Retention: old jobs are forgotten, the oldest output goes first, running jobs stay."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from harness import Certs, Daemon, collect, start
from jobd.config import ConfigError, load
from jobd.jobs.diskuse import DiskUse
from jobd.jobs.output import OVERHEAD, OutputLog, Stream
from jobd.jobs.retention import Retention, RetentionPolicy
from jobd.jobs.statedir import StateDir
from jobd.jobs.store import FINISHED, FINISHED_BEFORE, OLDEST_WITH_OUTPUT, Store
from jobd.model.job import Job, JobSpec, State

DAY = 86400.0


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir(tmp_path / "state")
    s.claim()
    yield s  # type: ignore[misc]
    s.release()


def make_job(store: Store, state: StateDir, job_id: str, *, ended: float | None,
             size: int, owner: str = "client_0") -> Job:  # fmt: skip
    job = Job(id=job_id, owner=owner, spec=JobSpec(argv=("true",)), created_at=0.0)
    job.spawned(1)
    if ended is not None:
        job.exited(0)
        job.ended_at = ended
    assert job.state is (State.FINISHED if ended is not None else State.RUNNING)
    state.log_path(job_id).write_bytes(b"x" * size)
    store.save(job)
    return job


def test_jobs_older_than_max_age_are_forgotten(state: StateDir) -> None:
    store = Store(state.database)
    now = time.time()
    make_job(store, state, "old", ended=now - 40 * DAY, size=10)
    make_job(store, state, "recent", ended=now - 1 * DAY, size=10)
    make_job(store, state, "running", ended=None, size=10)
    retention = Retention(RetentionPolicy(max_age=30 * DAY, max_output=None), store, state)
    retention.use.count("client_0", 30)
    retention.prune(now)
    assert store.get("old") is None and not state.log_path("old").exists()
    assert store.get("recent") is not None and state.log_path("recent").exists()
    assert store.get("running") is not None and state.log_path("running").exists()
    assert retention.stored == 20
    store.close()


def test_oldest_output_goes_first_and_records_stay(state: StateDir) -> None:
    store = Store(state.database)
    now = time.time()
    for i in range(3):
        make_job(store, state, f"done{i}", ended=now - 10 + i, size=100)
    make_job(store, state, "running", ended=None, size=500)
    retention = Retention(RetentionPolicy(max_age=None, max_output=650), store, state)
    retention.use.count("client_0", 800)
    retention.prune(now)
    assert retention.stored == 600
    for job_id, deleted in (("done0", True), ("done1", True), ("done2", False)):
        job = store.get(job_id)
        assert job is not None and job.output_deleted is deleted
        assert state.log_path(job_id).exists() is not deleted
        if deleted:
            assert job.output_error == "output deleted: stored output was above 650 B"
    assert state.log_path("running").exists()
    # Only running jobs are left over the limit: nothing more to delete, no endless loop.
    retention.policy = RetentionPolicy(max_age=None, max_output=100)
    retention.prune(now)
    assert state.log_path("running").exists()
    store.close()


def test_pruning_ends_while_the_database_refuses_changes(state: StateDir) -> None:
    store = Store(state.database)
    now = time.time()
    make_job(store, state, "a", ended=now - 5, size=100)
    make_job(store, state, "b", ended=now - 4, size=100)
    locker = sqlite3.connect(state.database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        retention = Retention(RetentionPolicy(max_age=None, max_output=0), store, state)
        retention.use.count("client_0", 200)
        retention.prune(now)  # returns: the changes wait in memory
        assert retention.stored == 0
        assert store.error is not None
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.flush()
    job = store.get("a")
    assert job is not None and job.output_deleted
    store.close()


def test_retention_lookups_read_partial_indexes_of_finished_jobs(state: StateDir) -> None:
    # A running job's record then writes only the table and two indexes; these lookups must
    # still find their rows through an index, never a scan of the whole history.
    store = Store(state.database)
    plans = []
    for sql, args in ((FINISHED_BEFORE, (1.0, 5)), (OLDEST_WITH_OUTPUT, ("client_0", 5))):
        plans.append(" ".join(r[-1] for r in store._db.execute("EXPLAIN QUERY PLAN " + sql, args)))
    assert "USING INDEX jobs_ended " in plans[0] and "TEMP B-TREE" not in plans[0]
    assert "USING INDEX jobs_output_by_owner" in plans[1] and "TEMP B-TREE" not in plans[1]
    partial = dict(store._db.execute("SELECT name, sql FROM sqlite_master WHERE type='index'"))
    assert f"WHERE state = {FINISHED}" in partial["jobs_ended"]
    assert f"WHERE state = {FINISHED} AND output_kept = 1" in partial["jobs_output_by_owner"]
    store.close()


def test_a_database_with_the_old_indexes_is_migrated(state: StateDir) -> None:
    store = Store(state.database)
    make_job(store, state, "done", ended=5.0, size=1)
    store.close()
    old = sqlite3.connect(state.database, isolation_level=None)
    for name, columns in (("jobs_by_state", "state"), ("jobs_by_ended", "state, ended_at, id"),
                          ("jobs_with_output", "output_kept, state, ended_at, id")):
        old.execute(f"CREATE INDEX {name} ON jobs ({columns})")
    old.close()
    store = Store(state.database)
    names = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert names >= {"jobs_ended", "jobs_output_by_owner"}
    assert not names & {"jobs_by_state", "jobs_by_ended", "jobs_with_output",
                        "jobs_ended_with_output"}
    assert store.finished_before(10.0, 5) == [("done", "client_0", 0)]
    store.close()


def test_retention_config(tmp_path: Path) -> None:
    path = tmp_path / "jobd.toml"
    path.write_text('[retention]\nmax_age = "12h"\nmax_output = "2G"\nmin_free = "3G"\n')
    config, _ = load(["--config", str(path)])
    assert config.retention == RetentionPolicy(max_age=12 * 3600, max_output=2 << 30,
                                               min_free=3 << 30)
    path.write_text("[retention]\nmax_age = false\nmax_output = false\n")
    config, _ = load(["--config", str(path)])
    assert config.retention == RetentionPolicy(max_age=None, max_output=None)
    assert load([])[0].retention == RetentionPolicy(max_age=30 * DAY, max_output=10 << 30)
    for bad, needle in (('max_age = "soon"', "invalid duration"), ("keep = 1", "unknown"),
                        ('min_free = "lots"', r"\[retention\]: .*lots")):
        path.write_text(f"[retention]\n{bad}\n")
        with pytest.raises(ConfigError, match=needle):
            load(["--config", str(path)])


def test_a_daemon_deletes_the_oldest_output_past_its_limit(certs: Certs, tmp_path: Path) -> None:
    daemon = Daemon(certs, tmp_path / "state", config_extra='[retention]\nmax_output = "2K"\n')
    daemon.start()
    try:
        async def scenario(stub: Any) -> None:
            ids = []
            for _ in range(3):
                job_id = await start(stub, ["head", "-c", "900", "/dev/zero"])
                await collect(stub, job_id)
                ids.append(job_id)
            # The third job's end pushed stored output over 2 KiB: the first one's goes.
            out, _, final, _ = await collect(stub, ids[0])
            assert out == b""
            assert final.output_error.startswith("output deleted")
            assert final.result.exit_code == 0  # the record itself stays
            for job_id in ids[1:]:
                assert (await collect(stub, job_id))[0] == bytes(900)

        daemon.run("client_0", scenario)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_the_identity_that_holds_the_most_loses_its_oldest_output_first(
    state: StateDir,
) -> None:
    store = Store(state.database)
    now = time.time()
    for i, owner in enumerate(["bob", "alice", "alice", "alice"]):  # bob's is the oldest
        make_job(store, state, f"{owner}{i}", ended=now - 10 + i, size=100, owner=owner)
    retention = Retention(RetentionPolicy(max_age=None, max_output=250), store, state)
    retention.use.count("bob", 100)
    retention.use.count("alice", 300)
    retention.prune(now)
    assert retention.stored == 200
    kept = {j: not store.get(j).output_deleted for j in ("bob0", "alice1", "alice2", "alice3")}
    # alice's flood pushed out alice's own oldest output, never bob's.
    assert kept == {"bob0": True, "alice1": False, "alice2": False, "alice3": True}
    store.close()


def test_output_running_jobs_hold_never_pushes_out_another_identitys(
    state: StateDir, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store(state.database)
    now = time.time()
    make_job(store, state, "alice-running", ended=None, size=1000, owner="alice")
    for i in range(2):
        make_job(store, state, f"bob{i}", ended=now - 10 + i, size=100, owner="bob")
    retention = Retention(RetentionPolicy(max_age=None, max_output=1100), store, state)
    retention.use.count("alice", 1000)
    retention.use.count("bob", 200)
    lookups = 0
    real = store.oldest_with_output

    def counted(owner: str, limit: int) -> list[Job]:
        nonlocal lookups
        lookups += 1
        assert lookups < 50, "pruning goes round in circles"
        return real(owner, limit)

    monkeypatch.setattr(store, "oldest_with_output", counted)
    retention.prune(now)
    # alice holds the most but has nothing finished: bob's history is not hers to push out.
    assert retention.stored == 1200
    assert [store.get(j).output_deleted for j in ("bob0", "bob1")] == [False, False]
    store.close()


def test_at_its_budget_an_identity_makes_room_from_its_own_oldest_output(
    state: StateDir,
) -> None:
    store = Store(state.database)
    now = time.time()
    for i in range(3):
        make_job(store, state, f"alice{i}", ended=now - 10 + i, size=300, owner="alice")
    make_job(store, state, "bob0", ended=now - 20, size=300, owner="bob")
    use = DiskUse(state.output, budget=lambda owner: 1000, min_free=0)
    Retention(RetentionPolicy(max_age=None, max_output=None), store, state, use)  # reclaims
    use.count("alice", 900)
    use.count("bob", 300)
    log = OutputLog(state.log_path("alice-new"), owner="alice", use=use)
    log.append(Stream.STDOUT, b"x" * 400)
    log.close()
    # Room for 400 bytes and a sixteenth of the budget to spare: alice's two oldest go.
    assert (log.data_bytes, log.dropped_bytes, log.error) == (400, 0, None)
    deleted = {j: store.get(j).output_deleted for j in ("alice0", "alice1", "alice2", "bob0")}
    assert deleted == {"alice0": True, "alice1": True, "alice2": False, "bob0": False}
    assert store.get("alice0").output_error == (
        "output deleted: alice's output budget of 1000 B was reached")
    assert not state.log_path("alice0").exists() and state.log_path("bob0").exists()
    assert use.by_owner["alice"] == 300 + 400 + OVERHEAD
    store.close()
