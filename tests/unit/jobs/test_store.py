"""The store's checkpoints: off the trio thread, and the WAL still starts over under load."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from jobd.jobs import store as store_module
from jobd.jobs.store import Store
from jobd.model.job import Job, JobSpec


def save_jobs(store: Store, count: int) -> None:
    for _ in range(count):
        job = Job(id=str(uuid.uuid4()), owner="client_0", spec=JobSpec(argv=("true",)))
        job.spawned(1)
        store.save(job)
        job.exited(0)
        store.save(job)


def rows_in_database_file_alone(path: Path) -> int:
    """Jobs the main database file holds without its WAL: what checkpoints have copied. Only
    a checkpoint that copied all of the WAL leaves a file that reads on its own."""
    alone = path.with_name("alone.db")
    shutil.copyfile(path, alone)
    db = sqlite3.connect(alone)
    try:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
    except sqlite3.DatabaseError:  # no table copied yet, or only part of the WAL
        return 0
    finally:
        db.close()
        alone.unlink()


def wal_size(path: Path) -> int:
    return os.stat(f"{path}-wal").st_size


@contextlib.asynccontextmanager
async def checkpointing(path: Path) -> AsyncIterator[Store]:
    """A store with its checkpointing task running, as the manager runs it."""
    store = Store(path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.keep_checkpointing)
            yield store
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()
    await trio.testing.wait_all_threads_completed()


def test_saves_never_checkpoint_on_their_own(tmp_path: Path) -> None:
    # SQLite's default would copy the WAL inside the save that passes 1000 pages, on the
    # trio thread, fsyncs and all: 400 jobs write well past that.
    store = Store(tmp_path / "jobs.db")
    try:
        save_jobs(store, 400)
        assert rows_in_database_file_alone(tmp_path / "jobs.db") == 0
    finally:
        store.close()


async def test_a_worker_thread_checkpoints_after_enough_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    path = tmp_path / "jobs.db"
    async with checkpointing(path) as store:
        save_jobs(store, 4)  # 8 saves: not yet
        await settle()
        assert rows_in_database_file_alone(path) == 0
        save_jobs(store, 1)
        await settle()
        assert rows_in_database_file_alone(path) == 5
        wal = wal_size(path)
        save_jobs(store, 1)  # all of it was copied: this save starts the WAL over
        assert wal_size(path) == wal


async def test_what_the_worker_could_not_copy_the_trio_thread_does_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A WAL starts over only once all of it was copied. Saves that never pause outrun the
    # worker's checkpoints; here a reader's snapshot holds the worker back instead.
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(store_module, "WAL_LIMIT", 50)
    path = tmp_path / "jobs.db"
    async with checkpointing(path) as store:
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            save_jobs(store, 2)
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM jobs").fetchone() == (2,)
            save_jobs(store, 20)  # one checkpoint, only up to the reader's snapshot
            await settle()
            assert rows_in_database_file_alone(path) == 0
            reader.execute("COMMIT")
        finally:
            reader.close()
        save_jobs(store, 1)  # past the limit: this save copies the rest itself
        assert rows_in_database_file_alone(path) == 23
        wal = wal_size(path)
        save_jobs(store, 5)  # and the WAL starts over instead of growing
        assert wal_size(path) == wal


async def test_a_large_request_is_kept_once_and_records_carry_a_summary(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.db")
    try:
        argv = ("prog", "x" * 100_000)
        env = {"BIG": "y" * 100_000}
        job = Job(id=str(uuid.uuid4()), owner="alice", spec=JobSpec(argv=argv, env=env))
        store.save(job)
        job.spawned(1)
        store.save(job)
        job.exited(0)
        store.save(job)
        (kept,) = store._db.execute("SELECT count(*) FROM requests").fetchone()
        assert kept == 1
        records = store._db.execute("SELECT length(record) FROM jobs").fetchall()
        assert records[0][0] < 8192  # a summary, not 200 KB, in every save
        listed = (await store.page(None, 10)).jobs[0]
        assert listed.spec.argv[-1].startswith("... (2 arguments, 100004 bytes")
        assert listed.spec.env == {}
        whole = store.get(job.id)
        assert whole is not None and whole.spec.argv == argv and whole.spec.env == env
        store.delete([job.id])
        assert store._db.execute("SELECT count(*) FROM requests").fetchone() == (0,)
        small = Job(id=str(uuid.uuid4()), owner="alice", spec=JobSpec(argv=("true",)))
        store.save(small)
        assert store._db.execute("SELECT count(*) FROM requests").fetchone() == (0,)
    finally:
        store.close()
