"""The async inference queue: accepted requests on local disk (sqlite), so none is lost to a restart.

The gateway workers put requests in (`submit`); one dispatcher per stack takes them out (`claim`), runs each
and records how it ended (`finish`). A request the stack was running when it stopped is put back by
`recover` at the next start, unless its output was already written: so each accepted request produces its
output once. Counts of successes and failures are kept beside the queue, so they survive restarts too
(Prometheus counters that a restart does not reset to zero for good).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
MAX_ATTEMPTS = 3  # a request the stack stopped under this many times is failed, not tried again
KEEP_FINISHED_SECONDS = 24 * 3600  # finished rows are kept a day (for `status`), then deleted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  accepted REAL NOT NULL,
  expires REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  started REAL,
  finished REAL,
  reason TEXT,
  request TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_state ON requests (state, accepted);
CREATE TABLE IF NOT EXISTS outcomes (outcome TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class AsyncRequest:
    """What InvokeEndpointAsync was asked, and where its answer goes (already resolved to URIs)."""

    inference_id: str
    input_location: str
    output_location: str
    failure_location: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    invocation_timeout: int
    request_ttl: int


@dataclass(frozen=True)
class Claim:
    request: AsyncRequest
    expires: float  # time.time() past which it is failed instead of run (RequestTTLSeconds)
    attempt: int  # 1 the first time it is claimed


@dataclass(frozen=True)
class Stats:
    backlog: int  # queued and running: SageMaker's ApproximateBacklogSize
    running: int
    oldest_age: float  # seconds the oldest unfinished request has waited (0 with none)
    successes: int
    failures: int


class AsyncQueue:
    """One sqlite file in WAL mode: several gateway processes write, one dispatcher reads, none blocks long."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file: every later connection is in WAL mode
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self, synced: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one operation. `synced` (submit): the commit is fsynced, so an accepted request is
        on disk before its 202. The dispatcher's writes are not: a power cut (not a crash) may forget that a
        request started or finished, and recover() then runs it again unless its output was written."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute(f"PRAGMA synchronous={'FULL' if synced else 'NORMAL'}")
            yield db
        finally:
            db.close()

    def submit(self, request: AsyncRequest, now: float | None = None) -> bool:
        """Queue the request; False when its InferenceId is already queued or running (it is not taken twice)."""
        now = time.time() if now is None else now
        with self._db(synced=True) as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT state FROM requests WHERE id = ?", (request.inference_id,)).fetchone()
            if row is not None and row[0] in (QUEUED, RUNNING):
                db.execute("ROLLBACK")
                return False
            db.execute(
                "INSERT OR REPLACE INTO requests (id, state, accepted, expires, request) VALUES (?, ?, ?, ?, ?)",
                (request.inference_id, QUEUED, now, now + request.request_ttl, json.dumps(asdict(request))),
            )
            db.execute("COMMIT")
        return True

    def claim(self, now: float | None = None) -> Claim | None:
        """The oldest queued request, now marked running; None when none waits."""
        now = time.time() if now is None else now
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT id, expires, attempts, request FROM requests WHERE state = ? ORDER BY accepted LIMIT 1",
                (QUEUED,),
            ).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            db.execute(
                "UPDATE requests SET state = ?, started = ?, attempts = attempts + 1 WHERE id = ?",
                (RUNNING, now, row[0]),
            )
            db.execute("COMMIT")
        return Claim(AsyncRequest(**json.loads(row[3])), row[1], row[2] + 1)

    def finish(self, inference_id: str, ok: bool, reason: str | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        outcome = "success" if ok else "failure"
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE requests SET state = ?, finished = ?, reason = ? WHERE id = ?",
                (DONE if ok else FAILED, now, reason, inference_id),
            )
            db.execute(
                "INSERT INTO outcomes (outcome, n) VALUES (?, 1) ON CONFLICT(outcome) DO UPDATE SET n = n + 1",
                (outcome,),
            )
            db.execute("COMMIT")

    def purge(self, now: float | None = None) -> int:
        """Delete the rows of requests finished more than KEEP_FINISHED_SECONDS ago (their counts stay)."""
        now = time.time() if now is None else now
        with self._db() as db:
            gone = db.execute("DELETE FROM requests WHERE state IN (?, ?) AND finished < ?",
                              (DONE, FAILED, now - KEEP_FINISHED_SECONDS))  # fmt: skip
            return gone.rowcount

    def retry(self, inference_id: str, counted: bool = True) -> None:
        """Put a running request back: it keeps its place and its TTL. Not `counted` when it never reached the
        gateway (gunicorn restarting), so that does not use up its MAX_ATTEMPTS."""
        with self._db() as db:
            db.execute(
                "UPDATE requests SET state = ?, attempts = attempts - ? WHERE id = ? AND state = ?",
                (QUEUED, 0 if counted else 1, inference_id, RUNNING),
            )

    def recover(self, written: Callable[[AsyncRequest, float], bool]) -> tuple[list[str], list[str]]:
        """At start-up: requests left running by a stack that stopped go back in the queue, or count as done
        when `written(request, started)` says that run wrote its output. Returns (requeued ids, ids failed after
        MAX_ATTEMPTS)."""
        with self._db() as db:
            rows = db.execute("SELECT id, attempts, started, request FROM requests WHERE state = ?", (RUNNING,))
            found = rows.fetchall()
        requeued, given_up = [], []
        for inference_id, attempts, started, raw in found:
            if written(AsyncRequest(**json.loads(raw)), started):
                self.finish(inference_id, True)
            elif attempts >= MAX_ATTEMPTS:
                self.finish(inference_id, False, f"the stack stopped while running it, {attempts} times")
                given_up.append(inference_id)
            else:
                self.retry(inference_id)
                requeued.append(inference_id)
        return requeued, given_up

    def state(self, inference_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT state FROM requests WHERE id = ?", (inference_id,)).fetchone()
        return row[0] if row else None

    def running(self, inference_id: str) -> AsyncRequest | None:
        """The request, if it is being run now (how the gateway knows the dispatcher's call from a client's)."""
        with self._db() as db:
            row = db.execute("SELECT request FROM requests WHERE id = ? AND state = ?", (inference_id, RUNNING))
            found = row.fetchone()
        return AsyncRequest(**json.loads(found[0])) if found else None

    def stats(self, now: float | None = None) -> Stats:
        now = time.time() if now is None else now
        with self._db() as db:
            counts = dict(db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall())
            oldest = db.execute("SELECT MIN(accepted) FROM requests WHERE state IN (?, ?)", (QUEUED, RUNNING))
            first = oldest.fetchone()[0]
            outcomes = dict(db.execute("SELECT outcome, n FROM outcomes").fetchall())
        backlog = counts.get(QUEUED, 0) + counts.get(RUNNING, 0)
        age = max(0.0, now - first) if first is not None else 0.0
        return Stats(backlog, counts.get(RUNNING, 0), age, outcomes.get("success", 0), outcomes.get("failure", 0))
