"""The job queue, persisted in SQLite (WAL): jobs survive restarts and crashes.

A job is queued, running, then done, failed or cancelled. When the server
starts, a job left ``running`` by a crash is re-queued once; if it was already
retried, it is failed with the reason. Finished jobs are never run again.

The database is shared with whatever else opens the file (a backup, a second
reader), so every statement is retried while SQLite answers "database is
locked", with a growing pause; a row that cannot be read back (damaged JSON,
wrong types) is reported as damaged instead of raising.

A job may carry options (``keep_going``, a ``webhook`` URL) and the state of
its webhook's delivery. A client's idempotency key is kept with a fingerprint
of its request in a table of its own, so a repeated submit finds its job
again after a restart; a database from before these columns is upgraded in
place when opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    graph_name TEXT NOT NULL,
    graph TEXT NOT NULL,
    params TEXT NOT NULL,
    sweep TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    report TEXT,
    outputs TEXT,
    options TEXT,
    webhook TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, priority DESC, id);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    created REAL NOT NULL
);
"""
#: The columns of a queue written before job options and webhooks; such a table is upgraded in place.
COLUMNS_BEFORE_OPTIONS = ("id", "graph_name", "graph", "params", "sweep", "priority", "status", "attempts", "created",
                          "started", "finished", "error", "report", "outputs")
COLUMNS = (*COLUMNS_BEFORE_OPTIONS, "options", "webhook")
FINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2
#: How long one statement waits inside SQLite for a lock before our own retry loop takes over.
BUSY_TIMEOUT_S = 0.5
#: Largest pause between retries of a locked database.
MAX_BACKOFF_S = 2.0

T = TypeVar("T")


class QueueDatabaseError(Exception):
    """The queue database cannot be used (damaged file, foreign schema, still locked after retries)."""


class IdempotencyConflict(Exception):
    """An idempotency key already names a job submitted with a different request."""

    def __init__(self, key: str, job_id: int) -> None:
        super().__init__(f"the idempotency key {key!r} was used for job {job_id} with a different request")
        self.key, self.job_id = key, job_id


@dataclass
class Job:
    """One row of the queue; ``damaged`` says why a row could not be read back (then it cannot run)."""

    id: int
    graph_name: str
    graph: dict[str, Any]
    params: dict[str, Any]
    sweep: dict[str, Any] | None
    priority: int
    status: str
    attempts: int
    created: float
    started: float | None
    finished: float | None
    error: str | None
    report: dict[str, Any] | None
    outputs: list[str]
    damaged: str | None = None
    #: ``{"keep_going": bool, "webhook": URL}`` as submitted (empty for a plain job).
    options: dict[str, Any] = field(default_factory=dict)
    #: The webhook's delivery: ``{"url", "delivered", "attempts", "last_error"}``; None without a webhook.
    webhook: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What job listings show (without the graph document)."""
        return {"id": self.id, "graph": self.graph_name, "params": self.params, "sweep": self.sweep,
                "priority": self.priority, "status": self.status, "attempts": self.attempts,
                "created": self.created, "started": self.started, "finished": self.finished,
                "seconds": (self.finished - self.started) if self.finished and self.started else None,
                "error": self.error, "outputs": self.outputs,
                **({"options": self.options} if self.options else {}),
                **({"webhook": self.webhook} if self.webhook else {})}

    def result(self) -> dict[str, Any]:
        """What a graph called as a function returns, and what a webhook receives.

        ``outputs`` are the graph's outputs as the run report holds them (JSON
        values as they are, others summarised; a sweep: one object per run);
        ``files`` are the URLs of the files the job wrote. A failed job run with
        ``keep_going`` keeps the outputs and files of the branches that finished
        (``partial`` true when there are any).
        """
        report = self.report or {}
        if "runs" in report:
            outputs: Any = [run.get("outputs", {}) for run in report["runs"]]
        else:
            outputs = report.get("outputs", {})
        return {"id": self.id, "status": self.status, "graph": self.graph_name, "outputs": outputs,
                "files": [f"/api/files/{name}" for name in self.outputs], "error": self.error,
                "partial": self.status == "failed" and bool(self.outputs or (
                    any(outputs) if isinstance(outputs, list) else outputs)),
                "url": f"/api/jobs/{self.id}"}

    def detail(self) -> dict[str, Any]:
        """Everything about the job, with its report and graph document."""
        damaged = {"damaged": self.damaged} if self.damaged else {}
        return {**self.summary(), "report": self.report, "graph_document": self.graph, **damaged}


def _is_locked(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _json_field(name: str, text: Any, kind: type, *, optional: bool = False) -> Any:
    """Decode one JSON column, raising ``ValueError`` naming the column when it is not the expected kind."""
    if text is None and optional:
        return None
    if not isinstance(text, str):
        raise ValueError(f"column {name} is {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"column {name} is not valid JSON") from None
    if not isinstance(value, kind) and not (optional and value is None):
        raise ValueError(f"column {name} holds {type(value).__name__}, not {kind.__name__}")
    return value


class JobStore:
    """Thread-safe access to the jobs table."""

    def __init__(self, path: Path, *, lock_patience_s: float = 30.0) -> None:
        self.path = path
        #: How long a caller that cannot wait forever (a request) keeps retrying a locked database.
        self.lock_patience_s = lock_patience_s
        # Threads whose statement is waiting out a lock right now (for the health endpoint).
        self._waiting: set[int] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                               timeout=BUSY_TIMEOUT_S)
            self._retry(lambda: self._open(), patience=self.lock_patience_s)
        except sqlite3.DatabaseError as error:
            raise QueueDatabaseError(f"the queue database {path} cannot be used: {error}") from None

    def _open(self) -> None:
        connection = self._connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        check = connection.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise QueueDatabaseError(f"the queue database {self.path} is damaged: "
                                     + "; ".join(str(row[0]) for row in check[:5]))
        connection.executescript(SCHEMA)
        found = tuple(row[1] for row in connection.execute("PRAGMA table_info(jobs)").fetchall())
        if found == COLUMNS_BEFORE_OPTIONS:  # an older sfumato's queue: its jobs stay, the new columns are empty
            for column in COLUMNS[len(COLUMNS_BEFORE_OPTIONS):]:
                connection.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
            found = COLUMNS
        if found != COLUMNS:
            raise QueueDatabaseError(f"the queue database {self.path} has a 'jobs' table that is not sfumato's "
                                     f"(columns {', '.join(found)})")

    # -- retrying ----------------------------------------------------------------------

    def _retry(self, action: Callable[[], T], *, patience: float | None = None) -> T:
        """Run ``action`` under the store lock, retrying while the database is locked.

        ``patience`` None retries forever (the worker: it has nothing better to do);
        a number gives up after that many seconds with :class:`QueueDatabaseError`.
        """
        pause, started = 0.05, time.monotonic()
        while True:
            try:
                with self._lock:
                    result = action()
                self._waiting.discard(threading.get_ident())
                return result
            except sqlite3.OperationalError as error:
                if not _is_locked(error):
                    raise
                if patience is not None and time.monotonic() - started > patience:
                    self._waiting.discard(threading.get_ident())
                    raise QueueDatabaseError(f"the queue database is locked by another program ({error}); "
                                             "try again later") from None
                self._waiting.add(threading.get_ident())
                time.sleep(pause)
                pause = min(pause * 2, MAX_BACKOFF_S)

    def waiting_for_lock(self, thread: threading.Thread | None = None) -> bool:
        """Whether ``thread`` (default: any thread) is waiting for another program's lock on the database."""
        if thread is None:
            return bool(self._waiting)
        return thread.ident in self._waiting

    def _read(self, action: Callable[[], T]) -> T:
        return self._retry(action, patience=self.lock_patience_s)

    # -- rows ----------------------------------------------------------------------------

    def _row(self, row: tuple[Any, ...]) -> Job:
        """A row as a :class:`Job`; a row that cannot be decoded comes back marked ``damaged``."""
        (id_, name, graph, params, sweep, priority, status, attempts, created, started, finished, error,
         report, outputs, options, webhook) = row
        try:
            return Job(int(id_), str(name), _json_field("graph", graph, dict), _json_field("params", params, dict),
                       _json_field("sweep", sweep, dict, optional=True), int(priority), str(status), int(attempts),
                       float(created), started, finished, error, _json_field("report", report, dict, optional=True),
                       _json_field("outputs", outputs, list, optional=True) or [],
                       options=_json_field("options", options, dict, optional=True) or {},
                       webhook=_json_field("webhook", webhook, dict, optional=True))
        except (ValueError, TypeError) as problem:
            return Job(int(id_), str(name), {}, {}, None, priority if isinstance(priority, int) else 0, str(status),
                       attempts if isinstance(attempts, int) else 0,
                       created if isinstance(created, float) else 0.0, started, finished,
                       error if isinstance(error, str) else None, None, [], damaged=str(problem))

    def recover(self) -> list[int]:
        """After a restart: re-queue interrupted jobs once, fail those already retried."""
        def action() -> list[int]:
            rows = self._connection.execute("SELECT id, attempts FROM jobs WHERE status='running'").fetchall()
            for job_id, attempts in rows:
                if isinstance(attempts, int) and attempts < MAX_ATTEMPTS:
                    self._connection.execute("UPDATE jobs SET status='queued', started=NULL WHERE id=?", (job_id,))
                else:
                    self._connection.execute(
                        "UPDATE jobs SET status='failed', finished=?, error=? WHERE id=?",
                        (time.time(), f"interrupted {attempts} times (server stopped while it ran)", job_id))
            return [job_id for job_id, _ in rows]
        return self._read(action)

    def add(self, graph_name: str, graph: dict[str, Any], params: dict[str, Any], sweep: dict[str, Any] | None,
            priority: int = 0, *, options: dict[str, Any] | None = None) -> int:
        """Queue a job; returns its id."""
        job_id, _ = self.add_once(graph_name, graph, params, sweep, priority, options=options)
        return job_id

    def add_once(self, graph_name: str, graph: dict[str, Any], params: dict[str, Any], sweep: dict[str, Any] | None,
                 priority: int = 0, *, options: dict[str, Any] | None = None,
                 idempotency: tuple[str, str] | None = None) -> tuple[int, bool]:
        """Queue a job unless its idempotency key already names one: ``(job id, True if it was already there)``.

        ``idempotency`` is ``(key, fingerprint of the request)``. The look-up and
        the insert are one transaction, so two submits racing with one key make
        one job. Raises :class:`IdempotencyConflict` when the key names a job
        submitted with another fingerprint.
        """
        options = options or {}
        webhook = {"url": options["webhook"], "delivered": False, "attempts": 0} if options.get("webhook") else None
        row = (graph_name, json.dumps(graph), json.dumps(params), json.dumps(sweep) if sweep else None,
               priority, time.time(), json.dumps(options) if options else None,
               json.dumps(webhook) if webhook else None)

        def action() -> tuple[int, bool]:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                if idempotency is not None:
                    found = self._connection.execute("SELECT fingerprint, job_id FROM idempotency WHERE key=?",
                                                     (idempotency[0],)).fetchone()
                    if found is not None:
                        self._connection.execute("COMMIT")
                        if found[0] != idempotency[1]:
                            raise IdempotencyConflict(idempotency[0], int(found[1]))
                        return int(found[1]), True
                cursor = self._connection.execute(
                    "INSERT INTO jobs (graph_name, graph, params, sweep, priority, status, created, options, webhook) "
                    "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)", row)
                job_id = int(cursor.lastrowid)
                if idempotency is not None:
                    self._connection.execute("INSERT INTO idempotency (key, fingerprint, job_id, created) "
                                             "VALUES (?, ?, ?, ?)", (*idempotency, job_id, time.time()))
                self._connection.execute("COMMIT")
                return job_id, False
            except IdempotencyConflict:
                raise
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        return self._read(action)

    def idempotent_job(self, key: str) -> tuple[str, int] | None:
        """``(fingerprint, job id)`` of the request an idempotency key was first used with, or None."""
        row = self._read(lambda: self._connection.execute(
            "SELECT fingerprint, job_id FROM idempotency WHERE key=?", (key,)).fetchone())
        return (str(row[0]), int(row[1])) if row else None

    def set_webhook(self, job_id: int, state: dict[str, Any]) -> None:
        """Record how a job's webhook delivery stands (waits out locks: a delivery is never forgotten)."""
        self._retry(lambda: self._connection.execute("UPDATE jobs SET webhook=? WHERE id=?",
                                                     (json.dumps(state), job_id)))

    def undelivered_webhooks(self) -> list[Job]:
        """Ended jobs whose webhook was neither delivered nor given up (after a restart: deliver them now)."""
        rows = self._read(lambda: self._connection.execute(
            "SELECT * FROM jobs WHERE webhook IS NOT NULL AND status IN ('done', 'failed', 'cancelled') "
            "AND json_extract(webhook, '$.delivered') = 0 AND json_extract(webhook, '$.gave_up') IS NOT 1"
        ).fetchall())
        return [job for job in map(self._row, rows) if not job.damaged]

    def claim_next(self) -> Job | None:
        """Atomically move the next queued job to running (waits as long as the database stays locked)."""
        def action() -> Any:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                row = self._connection.execute(
                    "SELECT id FROM jobs WHERE status='queued' ORDER BY priority DESC, id LIMIT 1").fetchone()
                if row is not None:
                    self._connection.execute(
                        "UPDATE jobs SET status='running', attempts=attempts+1, started=? WHERE id=?",
                        (time.time(), row[0]))
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            return row
        row = self._retry(action)
        if row is None:
            return None
        found = self._retry(lambda: self._connection.execute("SELECT * FROM jobs WHERE id=?", (row[0],)).fetchone())
        return self._row(found) if found else None

    def finish(self, job_id: int, status: str, *, error: str | None = None, report: dict[str, Any] | None = None,
               outputs: list[str] | None = None) -> None:
        """Record a job's end (waits as long as the database stays locked: a result is never dropped)."""
        values = (status, time.time(), error, json.dumps(report, default=str) if report else None,
                  json.dumps(outputs or []), job_id)
        self._retry(lambda: self._connection.execute(
            "UPDATE jobs SET status=?, finished=?, error=?, report=?, outputs=? WHERE id=?", values))

    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job that has not started; False when it is not queued."""
        return self._read(lambda: self._connection.execute(
            "UPDATE jobs SET status='cancelled', finished=? WHERE id=? AND status='queued'",
            (time.time(), job_id)).rowcount == 1)

    def get(self, job_id: int) -> Job | None:
        """The job, or None."""
        row = self._read(lambda: self._connection.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
        return self._row(row) if row else None

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """Jobs newest first, and how many there are in all."""
        where, args = ("WHERE status=?", [status]) if status else ("", [])

        def action() -> tuple[Any, Any]:
            total = self._connection.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._connection.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                            [*args, limit, offset]).fetchall()
            return total, rows
        total, rows = self._read(action)
        return [self._row(r) for r in rows], int(total)

    def count(self, status: str, *, patience: float | None = None) -> int:
        """How many jobs have this status (``patience``: seconds to wait out a lock, default the store's)."""
        return int(self._retry(lambda: self._connection.execute(
            "SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0],
            patience=self.lock_patience_s if patience is None else patience))

    def replace_texts(self, job_id: int, *, graph: dict[str, Any], params: dict[str, Any],
                      sweep: dict[str, Any] | None, report: dict[str, Any] | None) -> None:
        """Overwrite a finished job's inputs and report (``--strip-prompts`` keeps no prompt once a job ends)."""
        values = (json.dumps(graph), json.dumps(params), json.dumps(sweep) if sweep else None,
                  json.dumps(report, default=str) if report else None, job_id)
        self._retry(lambda: self._connection.execute(
            "UPDATE jobs SET graph=?, params=?, sweep=?, report=? WHERE id=?", values))

    def delete_finished_before(self, cutoff: float) -> list[int]:
        """Delete jobs that ended (done, failed, cancelled) before ``cutoff`` (a Unix time); their ids."""
        def action() -> list[int]:
            rows = self._connection.execute(
                "SELECT id FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND finished < ?",
                (cutoff,)).fetchall()
            ids = [int(row[0]) for row in rows]
            self._connection.executemany("DELETE FROM jobs WHERE id=?", [(job_id,) for job_id in ids])
            self._connection.executemany("DELETE FROM idempotency WHERE job_id=?", [(job_id,) for job_id in ids])
            return ids
        return self._read(action)
