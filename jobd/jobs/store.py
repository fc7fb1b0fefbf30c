"""Job history in an embedded SQLite database (WAL) in the state directory.

Writes are single-row upserts made on the trio thread: with WAL and ``synchronous=NORMAL``
they cost tens of microseconds and reach the OS before a client hears of the change, so a
daemon killed right after answering loses nothing. Checkpoints (copying the WAL into the
database, with their fsyncs) run on a worker thread, not inside whichever save crossed
SQLite's threshold. Listing many jobs reads on a worker thread through its own connection.
If the database cannot be written (locked by another process, disk full), the change is kept
in memory, retried, and the daemon keeps serving.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import trio

from jobd.model import bounds
from jobd.model.job import Job, JobSpec, Outcome, Result, State
from jobd.model.namespaces import ORDER, Namespace
from jobd.model.resources import Limits, Usage

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    record TEXT NOT NULL,
    output_kept INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    argv TEXT NOT NULL,
    env TEXT NOT NULL
);
"""
# A request bigger than this (argv and env together) is kept once, in ``requests``, and each
# save of the job's state carries a summary of it (bounds.summarize_*): 200 starts with 2 MiB
# requests wrote each three times over, 400 MB of WAL.
RECORD_REQUEST_BYTES = bounds.SUMMARY_ARGV_BYTES + bounds.SUMMARY_ENV_BYTES
# The two retention lookups read finished jobs only, so their indexes are partial: a job's
# first record (it runs) then writes 3 B-trees, not 6, and its last adds it to these two.
# The state is spelled out, not bound, in the queries below, or SQLite would not use them.
FINISHED = f"'{State.FINISHED.value}'"
INDEXES = f"""
DROP INDEX IF EXISTS jobs_by_state;
DROP INDEX IF EXISTS jobs_by_ended;
DROP INDEX IF EXISTS jobs_with_output;
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (ended_at, id) WHERE state = {FINISHED};
DROP INDEX IF EXISTS jobs_ended_with_output;
CREATE INDEX IF NOT EXISTS jobs_output_by_owner ON jobs (owner, ended_at, id)
    WHERE state = {FINISHED} AND output_kept = 1;
"""
RETRY_INTERVAL = 1.0
# Saves between checkpoints: a job's two records write ~6 WAL pages, so the WAL stays near
# SQLite's own default of 1000 pages while saves pause now and then.
CHECKPOINT_EVERY = 300
# A WAL restarts only once a checkpoint has copied all of it, which saves that never pause
# can outrun: past this many pages the trio thread copies the rest itself (see save()).
WAL_LIMIT = 4000


def large_request(job: Job) -> bool:
    return bounds.request_size(job.spec.argv, job.spec.env) > RECORD_REQUEST_BYTES


def kept_request_bytes(job: Job) -> int:
    """What the requests table will hold for ``job`` (its argv and env as JSON, ASCII), if
    its request is large; else 0. Counted against its owner's disk budget (jobd.jobs.diskuse)."""
    if not large_request(job):
        return 0
    return len(json.dumps(list(job.spec.argv))) + len(json.dumps(dict(job.spec.env)))


def job_to_record(job: Job) -> dict[str, Any]:
    result = job.result
    large = large_request(job)
    return {
        "argv": bounds.summarize_argv(job.spec.argv) if large else list(job.spec.argv),
        "env": bounds.summarize_env(job.spec.env) if large else dict(job.spec.env),
        "request_kept": large,  # whole in the requests table
        "cwd": job.spec.cwd,
        "started_at": job.started_at,
        "pid": job.pid,
        "process_key": job.process_key,
        "limits": _fields(job.limits),
        "usage": _fields(job.usage),
        "isolation": [ns.value for ns in ORDER if ns in job.isolation],
        "run_as": job.run_as,
        "syscall_filter": job.syscall_filter,
        "stopped_by": job.stopped_by,
        "output_bytes": job.output_bytes,
        "output_dropped_bytes": job.output_dropped_bytes,
        "output_error": job.output_error,
        "output_deleted": job.output_deleted,
        "result": None
        if result is None
        else {
            "outcome": result.outcome.value,
            "message": result.message,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "stopped_by": result.stopped_by,
        },
    }


def _fields(record: Limits | Usage) -> dict[str, Any]:
    # Numbers and a tuple of numbers only: a shallow copy is what dataclasses.asdict's deep
    # one would give, at a fifth of the cost (it runs twice for every job).
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    job_id, owner, state, created_at, ended_at, record_text = row
    rec = json.loads(record_text)
    r = rec.get("result")
    return Job(
        id=job_id,
        owner=owner,
        spec=JobSpec(argv=tuple(rec["argv"]), env=rec["env"], cwd=rec["cwd"]),
        state=State(state),
        result=None if r is None else _result_from_record(r),
        created_at=created_at,
        started_at=rec.get("started_at"),
        ended_at=ended_at,
        pid=rec.get("pid"),
        process_key=rec.get("process_key", ""),
        limits=_limits(rec.get("limits")),
        usage=Usage(**rec["usage"]) if rec.get("usage") else Usage(),
        isolation=frozenset(Namespace(name) for name in rec.get("isolation", ())),
        run_as=rec.get("run_as", ""),
        syscall_filter=rec.get("syscall_filter", ""),
        stopped_by=rec.get("stopped_by", ""),
        output_bytes=rec.get("output_bytes", 0),
        output_dropped_bytes=rec.get("output_dropped_bytes", 0),
        output_error=rec.get("output_error", ""),
        output_deleted=rec.get("output_deleted", False),
    )


def _limits(raw: dict[str, Any] | None) -> Limits:
    if not raw:
        return Limits()
    device = raw.get("io_device")
    return Limits(**{**raw, "io_device": tuple(device) if device else None})


def _result_from_record(r: dict[str, Any]) -> Result:
    return Result(Outcome(r["outcome"]), r["message"], r["exit_code"], r["signal"], r["stopped_by"])


def _row(job: Job) -> tuple[Any, ...]:
    record = json.dumps(job_to_record(job), separators=(",", ":"))
    kept = 0 if job.output_deleted else 1
    return (job.id, job.owner, job.state.value, job.created_at, job.ended_at, record, kept)


COLUMNS = "id, owner, state, created_at, ended_at, record"
# An update sets only what can change (not owner or created_at), so that SQLite leaves the
# indexes on those alone: a job's later records then write 4 of its 7 B-trees, not all of
# them twice as INSERT OR REPLACE (a delete and an insert) did.
UPSERT = (
    f"INSERT INTO jobs ({COLUMNS}, output_kept) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,"
    " record = excluded.record, output_kept = excluded.output_kept"
)

# Retention's two lookups, which the partial indexes above serve.
FINISHED_BEFORE = (
    "SELECT id, owner, (SELECT length(argv) + length(env) FROM requests r WHERE r.id = jobs.id) "
    f"FROM jobs WHERE state = {FINISHED} AND ended_at < ? ORDER BY ended_at, id LIMIT ?"
)
OLDEST_WITH_OUTPUT = (
    f"SELECT {COLUMNS} FROM jobs WHERE state = {FINISHED} AND output_kept = 1 AND owner = ? "
    "ORDER BY ended_at, id LIMIT ?"
)


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_token: str


def page_token(job: Job) -> str:
    """The token of a page that continues after ``job``."""
    return _encode_token(job)


def _encode_token(job: Job) -> str:
    return f"{job.created_at!r}/{job.id}"


def _decode_token(token: str) -> tuple[float, str]:
    created, _, job_id = token.partition("/")
    try:
        return float(created), job_id
    except ValueError:
        raise ValueError("page_token is not one this server handed out") from None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = self._connect()
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "output_kept" not in columns:  # a database from before retention existed
            self._db.execute("ALTER TABLE jobs ADD COLUMN output_kept INTEGER NOT NULL DEFAULT 1")
        self._db.executescript(INDEXES)
        # Ids of jobs whose large request is in the requests table (until their last save).
        self._requests_kept: set[str] = set()
        # Read from worker threads through a connection of their own; WAL lets them run
        # beside the writer.
        self._reader = self._connect(check_same_thread=False)
        self._read_lock = trio.CapacityLimiter(1)
        self._pending: dict[str, Job] = {}
        self._pending_changed = trio.Event()
        # keep_checkpointing() does what SQLite would do in the save that crossed its
        # threshold: that save waited for the copy and its fsyncs (~40 us a job on average,
        # milliseconds for the one).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._saves = 0
        self._checkpoint_due = trio.Event()
        self._wal_pages = 0  # the WAL's size if the last checkpoint left some of it, else 0
        self.error: str | None = None

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=check_same_thread, timeout=0
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.flush():
            log.error("%d job record(s) could not be written: %s", len(self._pending), self.error)
        self._db.close()
        self._reader.close()

    # Writing

    def save(self, job: Job) -> None:
        """Record ``job`` as it is now. Never raises for database trouble: see ``error``."""
        if self._pending:
            self._pending[job.id] = job.snapshot()
            return
        try:
            self._keep_request(job)
            self._db.execute(UPSERT, _row(job))
        except sqlite3.Error as exc:
            self._defer(job, exc)
            return
        if job.finished:
            self._requests_kept.discard(job.id)
        self._saves += 1
        if self._saves >= CHECKPOINT_EVERY:
            self._checkpoint_due.set()
        if self._wal_pages > WAL_LIMIT and not self._read_lock.borrowed_tokens:
            # Copies only what the worker has not (the last few saves), then lets the next
            # save start the WAL over; as SQLite would have, but once per WAL_LIMIT pages.
            self._checkpoint(self._db, "RESTART")
            self._wal_pages = 0  # or another process reads it still: the next one will tell

    def _keep_request(self, job: Job) -> None:
        """A large request, whole, once (its record's saves carry a summary)."""
        if job.id in self._requests_kept or not large_request(job):
            return
        self._db.execute(
            "INSERT OR IGNORE INTO requests (id, argv, env) VALUES (?, ?, ?)",
            (job.id, json.dumps(list(job.spec.argv)), json.dumps(dict(job.spec.env))),
        )
        self._requests_kept.add(job.id)

    def _defer(self, job: Job, exc: sqlite3.Error) -> None:
        if self.error is None:
            log.error("job history cannot be written (%s); keeping changes in memory", exc)
        self.error = f"job history cannot be written: {exc}"
        self._pending[job.id] = job.snapshot()
        self._pending_changed.set()

    def flush(self) -> bool:
        """Write every deferred change; True when nothing is left pending."""
        if not self._pending:
            return True
        try:
            self._db.execute("BEGIN")
            for job in self._pending.values():
                self._keep_request(job)
            self._db.executemany(UPSERT, [_row(j) for j in self._pending.values()])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return False
        log.info("job history writable again; %d deferred change(s) written", len(self._pending))
        self._pending.clear()
        self.error = None
        return True

    async def keep_flushing(self) -> None:
        """Retry deferred writes until cancelled."""
        while True:
            await self._pending_changed.wait()
            # Nothing announces that another process let go of the database: retry on a timer.
            while not self.flush():  # noqa: ASYNC110
                await trio.sleep(RETRY_INTERVAL)
            self._pending_changed = trio.Event()

    async def keep_checkpointing(self) -> None:
        """Checkpoint the WAL on a worker thread after every ``CHECKPOINT_EVERY`` saves,
        until cancelled. PASSIVE: saves go on meanwhile; what they add is copied next time."""
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due, self._saves = trio.Event(), 0
            async with self._read_lock:
                self._wal_pages = await trio.to_thread.run_sync(
                    self._checkpoint, self._reader, "PASSIVE"
                )

    @staticmethod
    def _checkpoint(db: sqlite3.Connection, mode: str) -> int:
        """Copy the WAL into the database. The pages it holds if some are left to copy (saves
        meanwhile, or another process's read), else 0: then the next save starts it over."""
        try:
            _busy, pages, copied = db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:  # the next one copies it; reads and saves go on
            log.warning("job history checkpoint failed: %s", exc)
            return 0
        return int(pages) if copied < pages else 0

    # Reading

    def get(self, job_id: str) -> Job | None:
        """The job with its request whole (a page's jobs carry only a summary of a large one)."""
        if job_id in self._pending:
            return self._pending[job_id]
        row = self._db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if not row:
            return None
        job = job_from_row(row)
        if json.loads(row[-1]).get("request_kept"):
            kept = self._db.execute("SELECT argv, env FROM requests WHERE id = ?",
                                    (job_id,)).fetchone()  # fmt: skip
            if kept:
                spec = replace(job.spec, argv=tuple(json.loads(kept[0])), env=json.loads(kept[1]))
                job = replace(job, spec=spec)
        return job

    def finished_before(self, cutoff: float, limit: int) -> list[tuple[str, str, int]]:
        """(id, owner, bytes of its kept request) of jobs that ended before ``cutoff``,
        oldest first."""
        rows = self._db.execute(FINISHED_BEFORE, (cutoff, limit)).fetchall()
        return [(r[0], r[1], r[2] or 0) for r in rows]

    def oldest_with_output(self, owner: str, limit: int) -> list[Job]:
        """``owner``'s finished jobs whose output is still stored, oldest first."""
        rows = self._db.execute(OLDEST_WITH_OUTPUT, (owner, limit)).fetchall()
        return [job_from_row(r) for r in rows]

    def owners(self) -> dict[str, str]:
        """Every job's owner, by id (on a worker thread: at start, to count stored output)."""
        return dict(self._reader.execute("SELECT id, owner FROM jobs").fetchall())

    def kept_requests_by_owner(self) -> dict[str, int]:
        """Bytes of large requests kept, by owner (on a worker thread, at start)."""
        return dict(self._reader.execute(
            "SELECT jobs.owner, SUM(length(r.argv) + length(r.env)) FROM requests r "
            "JOIN jobs ON jobs.id = r.id GROUP BY jobs.owner").fetchall())  # fmt: skip

    def delete(self, job_ids: list[str]) -> None:
        marks = ", ".join("?" * len(job_ids))
        self._db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", job_ids)
        self._db.execute(f"DELETE FROM requests WHERE id IN ({marks})", job_ids)

    def unfinished(self) -> list[Job]:
        rows = self._db.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE state != {FINISHED}"
        ).fetchall()
        return [job_from_row(r) for r in rows]

    async def page(self, owner: str | None, limit: int, token: str = "") -> Page:
        """Newest first; ``token`` continues after the last job of an earlier page."""
        after = _decode_token(token) if token else None
        async with self._read_lock:
            rows = await trio.to_thread.run_sync(self._select_page, owner, limit + 1, after)
        jobs = [job_from_row(r) for r in rows]
        if self._pending:  # rare: only while the database is unwritable
            pending = {
                j.id: j
                for j in self._pending.values()
                if (not owner or j.owner == owner)
                and (after is None or (j.created_at, j.id) < after)
            }
            jobs = [j for j in jobs if j.id not in pending] + list(pending.values())
            jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return Page(jobs, _encode_token(jobs[-1]) if more and jobs else "")

    def _select_page(
        self, owner: str | None, limit: int, after: tuple[float, str] | None
    ) -> list[tuple[Any, ...]]:
        where: list[str] = []
        args: list[Any] = []
        if owner:
            where.append("owner = ?")
            args.append(owner)
        if after is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(after)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?"
        return self._reader.execute(sql, (*args, limit)).fetchall()
