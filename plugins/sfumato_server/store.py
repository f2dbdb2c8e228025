"""The job queue, persisted in SQLite (WAL): jobs survive restarts and crashes.

A job is queued, running, then done, failed or cancelled. When the server
starts, a job left ``running`` by a crash is re-queued once; if it was already
retried, it is failed with the reason. Finished jobs are never run again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, priority DESC, id);
"""
FINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2


@dataclass
class Job:
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

    def summary(self) -> dict[str, Any]:
        """What job listings show (without the graph document)."""
        return {"id": self.id, "graph": self.graph_name, "params": self.params, "sweep": self.sweep,
                "priority": self.priority, "status": self.status, "attempts": self.attempts,
                "created": self.created, "started": self.started, "finished": self.finished,
                "seconds": (self.finished - self.started) if self.finished and self.started else None,
                "error": self.error, "outputs": self.outputs}

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "report": self.report, "graph_document": self.graph}


class JobStore:
    """Thread-safe access to the jobs table."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.executescript(SCHEMA)
        self._lock = threading.Lock()

    def _row(self, row: tuple[Any, ...]) -> Job:
        (id_, name, graph, params, sweep, priority, status, attempts, created, started, finished, error,
         report, outputs) = row
        return Job(id_, name, json.loads(graph), json.loads(params), json.loads(sweep) if sweep else None,
                   priority, status, attempts, created, started, finished, error,
                   json.loads(report) if report else None, json.loads(outputs) if outputs else [])

    def recover(self) -> list[int]:
        """After a restart: re-queue interrupted jobs once, fail those already retried."""
        with self._lock:
            rows = self._connection.execute("SELECT id, attempts FROM jobs WHERE status='running'").fetchall()
            for job_id, attempts in rows:
                if attempts < MAX_ATTEMPTS:
                    self._connection.execute("UPDATE jobs SET status='queued', started=NULL WHERE id=?", (job_id,))
                else:
                    self._connection.execute(
                        "UPDATE jobs SET status='failed', finished=?, error=? WHERE id=?",
                        (time.time(), f"interrupted {attempts} times (server stopped while it ran)", job_id))
        return [job_id for job_id, _ in rows]

    def add(self, graph_name: str, graph: dict[str, Any], params: dict[str, Any], sweep: dict[str, Any] | None,
            priority: int = 0) -> int:
        with self._lock:
            cursor = self._connection.execute(
                "INSERT INTO jobs (graph_name, graph, params, sweep, priority, status, created) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                (graph_name, json.dumps(graph), json.dumps(params), json.dumps(sweep) if sweep else None,
                 priority, time.time()))
            return int(cursor.lastrowid)

    def claim_next(self) -> Job | None:
        """Atomically move the next queued job to running."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                row = self._connection.execute(
                    "SELECT id FROM jobs WHERE status='queued' ORDER BY priority DESC, id LIMIT 1").fetchone()
                if row is None:
                    self._connection.execute("COMMIT")
                    return None
                self._connection.execute(
                    "UPDATE jobs SET status='running', attempts=attempts+1, started=? WHERE id=?",
                    (time.time(), row[0]))
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        return self.get(row[0])

    def finish(self, job_id: int, status: str, *, error: str | None = None, report: dict[str, Any] | None = None,
               outputs: list[str] | None = None) -> None:
        with self._lock:
            self._connection.execute(
                "UPDATE jobs SET status=?, finished=?, error=?, report=?, outputs=? WHERE id=?",
                (status, time.time(), error, json.dumps(report, default=str) if report else None,
                 json.dumps(outputs or []), job_id))

    def cancel_queued(self, job_id: int) -> bool:
        with self._lock:
            cursor = self._connection.execute(
                "UPDATE jobs SET status='cancelled', finished=? WHERE id=? AND status='queued'", (time.time(), job_id))
            return cursor.rowcount == 1

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._connection.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        where, args = ("WHERE status=?", [status]) if status else ("", [])
        with self._lock:
            total = self._connection.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._connection.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                            [*args, limit, offset]).fetchall()
        return [self._row(r) for r in rows], int(total)

    def count(self, status: str) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM jobs WHERE status=?", (status,)).fetchone()[0])
