"""Async invocations in one SQLite file under ``clrk dev``'s state directory.

Three tables: ``runs`` (the record as JSON, see :mod:`clrk.ingress.run_encoding`, beside the
columns queries select on), ``results`` (the answer's body as a BLOB, with its size for the cap)
and ``output`` (one row per stdout line: id, number, text). Status changes are one SQL statement
each (``UPDATE … WHERE status IN (…)``), so a compare-and-set holds even across connections;
``finish`` writes the record and the result in one transaction. The file outlives the process: a
new store on the same path sees every run (and :meth:`~FileRunStore.unfinished` tells a restart
what it must resume or mark cut).

Followers live in this one process: each waits on an :class:`asyncio.Event` that every write to
its run sets (after the write committed, so a follower that read before it is always woken), and
reads again every :attr:`FileRunStore.FOLLOW_RECHECK_S` anyway (a run dropped by another process).

sqlite3 blocks, so every query runs in the store's one worker thread, as
:class:`~clrk.egress.budgets.SqliteBudgets` does and for the same reasons: the loop only awaits, and
the file and its ``-wal``/``-shm`` are readable by the owner alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path

from clrk.ingress.records import Result, RunRecord
from clrk.ingress.run_encoding import decode_record, encode_record, ended
from clrk.storage import PrivateDatabase
from clrk_runtime.protocol.invocations import Status

__all__ = ["FileRunStore"]

_NOT_FINAL = (str(Status.QUEUED), str(Status.RUNNING))
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at REAL NOT NULL,"
    " finished_at REAL, expires_at REAL, result_expired INTEGER NOT NULL DEFAULT 0, doc TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status)",
    "CREATE INDEX IF NOT EXISTS runs_by_expiry ON runs (expires_at)",
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, http_status INTEGER NOT NULL,"
    " content_type TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL, finished_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS output (id TEXT NOT NULL, number INTEGER NOT NULL, text TEXT NOT NULL,"
    " PRIMARY KEY (id, number)) WITHOUT ROWID",
)
_SET_IF_EXPECTED = (
    "UPDATE runs SET status = ?, finished_at = ?, expires_at = ?, doc = ?"
    " WHERE id = ? AND status IN (SELECT value FROM json_each(?))"
)
"""Binds :func:`_columns`, then the statuses the run may change from (a JSON array)."""
_SET_IF_UNENDED = (
    "UPDATE runs SET status = ?, finished_at = ?, expires_at = ?, doc = ?"
    " WHERE id = ? AND status IN ('queued', 'running')"
)
"""Binds :func:`_columns`."""
_SET_IF_KEPT = (
    "UPDATE runs SET status = ?, finished_at = ?, expires_at = ?, doc = ?"
    " WHERE id = ? AND (status IN ('queued', 'running') OR status = ?)"
)
"""Binds :func:`_columns`, then the record's status again: never revives an ended run."""
_UNFINISHED = "SELECT doc, result_expired FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at, id"


def _columns(record: RunRecord) -> tuple[str, float | None, float | None, str, str]:
    """The values every ``UPDATE`` of a record binds first, in order."""
    return str(record.status), record.finished_at, record.expires_at, encode_record(record), record.invocation_id


class FileRunStore:
    """A :class:`~clrk.ingress.records.RunStore` in SQLite (WAL), for one process: a file readable
    by its owner only, queried in a thread of its own (:class:`~clrk.storage.PrivateDatabase`).

    ``retention_s``: how long an ended run is kept (its ``expires_at``, when the writer set none).
    ``max_result_bytes_total``: the most result bytes kept at once; :meth:`expire` drops the
    oldest finished results past it (their records stay, marked ``result_expired``).
    """

    FOLLOW_BATCH = 1000
    """Lines a follower reads at once (its memory, whatever the log's length)."""
    FOLLOW_RECHECK_S = 5.0
    """How often a follower that was not woken reads again anyway."""

    def __init__(self, path: Path, *, retention_s: float, max_result_bytes_total: int) -> None:
        """Opens nothing yet: the worker opens ``path`` on the first query; :meth:`open` does it now."""
        self._database = PrivateDatabase(path, _SCHEMA, name="clrk-runs")
        self._run = self._database.run
        self._retention_s = retention_s
        self._max_result_bytes_total = max_result_bytes_total
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, retention_s: float, max_result_bytes_total: int) -> FileRunStore:
        """A store whose file is open (and readable by the owner only), so errors surface here."""
        store = cls(path, retention_s=retention_s, max_result_bytes_total=max_result_bytes_total)
        await store._run(lambda db: None)
        return store

    def _notify(self, invocation_id: str) -> None:
        for wake in self._watchers.get(invocation_id, ()):
            wake.set()

    async def create(self, record: RunRecord) -> None:
        record = ended(record, time.time(), self._retention_s)

        def create(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO runs (id, status, created_at, finished_at, expires_at, doc) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.invocation_id,
                        str(record.status),
                        record.created_at,
                        record.finished_at,
                        record.expires_at,
                        encode_record(record),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"run {record.invocation_id} exists already") from None

        await self._run(create)

    async def get(self, invocation_id: str) -> RunRecord | None:
        row = await self._run(
            lambda db: db.execute("SELECT doc, result_expired FROM runs WHERE id = ?", (invocation_id,)).fetchone()
        )
        return None if row is None else decode_record(row[0], result_expired=bool(row[1]))

    async def update(self, record: RunRecord) -> None:
        record = ended(record, time.time(), self._retention_s)
        written = await self._run(lambda db: db.execute(_SET_IF_KEPT, (*_columns(record), str(record.status))).rowcount)
        if written:
            self._notify(record.invocation_id)

    async def transition(self, invocation_id: str, expected: frozenset[Status], record: RunRecord) -> bool:
        if record.invocation_id != invocation_id:
            raise ValueError(f"record of {record.invocation_id} given for {invocation_id}")
        if not expected:
            return False
        record = ended(record, time.time(), self._retention_s)
        statuses = json.dumps(sorted(str(s) for s in expected))
        written = await self._run(lambda db: db.execute(_SET_IF_EXPECTED, (*_columns(record), statuses)).rowcount)
        if written:
            self._notify(invocation_id)
        return bool(written)

    async def finish(self, record: RunRecord, result: Result) -> bool:
        if not record.final:
            raise ValueError(f"finish needs a final record, not one {record.status}")
        record = ended(record, time.time(), self._retention_s)

        def finish(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                if not db.execute(_SET_IF_UNENDED, _columns(record)).rowcount:
                    db.execute("ROLLBACK")
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO results (id, http_status, content_type, body, size, finished_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.invocation_id,
                        result.http_status,
                        result.content_type,
                        result.body,
                        len(result.body),
                        record.finished_at,
                    ),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return True

        written = await self._run(finish)
        if written:
            self._notify(record.invocation_id)
        return written

    async def result(self, invocation_id: str) -> Result | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT http_status, content_type, body FROM results WHERE id = ?", (invocation_id,)
            ).fetchone()
        )
        return None if row is None else Result(http_status=int(row[0]), content_type=str(row[1]), body=bytes(row[2]))

    async def append_output(self, invocation_id: str, lines: list[str]) -> None:
        if not lines:
            return

        def append(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT status FROM runs WHERE id = ?", (invocation_id,)).fetchone()
                if row is None or row[0] not in _NOT_FINAL:
                    db.execute("ROLLBACK")
                    return False
                (last,) = db.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM output WHERE id = ?", (invocation_id,)
                ).fetchone()
                db.executemany(
                    "INSERT INTO output (id, number, text) VALUES (?, ?, ?)",
                    [(invocation_id, last + i, line) for i, line in enumerate(lines, start=1)],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return True

        if await self._run(append):
            self._notify(invocation_id)

    def _lines_since(
        self, db: sqlite3.Connection, invocation_id: str, after: int
    ) -> tuple[list[tuple[int, str]], bool]:
        """Lines past ``after`` (one batch) and whether more can come. The status is read first:
        once it is final no line is appended any more, so the lines read after it are all."""
        row = db.execute("SELECT status FROM runs WHERE id = ?", (invocation_id,)).fetchone()
        rows = db.execute(
            "SELECT number, text FROM output WHERE id = ? AND number > ? ORDER BY number LIMIT ?",
            (invocation_id, after, self.FOLLOW_BATCH),
        ).fetchall()
        return [(int(n), str(t)) for n, t in rows], row is not None and row[0] in _NOT_FINAL

    async def follow(self, invocation_id: str, after: int = 0) -> AsyncGenerator[tuple[int, str], None]:
        """See :meth:`~clrk.ingress.records.RunStore.follow`. Iterate it inside
        :func:`contextlib.aclosing` so a reader that stops unregisters at once."""
        wake = asyncio.Event()
        self._watchers.setdefault(invocation_id, set()).add(wake)
        try:
            while not self._closed:
                wake.clear()
                lines, live = await self._run(partial(self._lines_since, invocation_id=invocation_id, after=after))
                for number, text in lines:
                    yield number, text
                    after = number
                if len(lines) == self.FOLLOW_BATCH:
                    continue
                if not live:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.FOLLOW_RECHECK_S):
                        await wake.wait()
        finally:
            watchers = self._watchers.get(invocation_id)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[invocation_id]

    async def unfinished(self) -> list[RunRecord]:
        rows = await self._run(lambda db: db.execute(_UNFINISHED).fetchall())
        return [decode_record(doc, result_expired=bool(gone)) for doc, gone in rows]

    async def expire(self, now: float) -> int:
        def expire(db: sqlite3.Connection) -> tuple[list[str], int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                dropped = [str(i) for (i,) in db.execute("SELECT id FROM runs WHERE expires_at < ?", (now,))]
                db.execute("DELETE FROM output WHERE id IN (SELECT id FROM runs WHERE expires_at < ?)", (now,))
                db.execute("DELETE FROM results WHERE id IN (SELECT id FROM runs WHERE expires_at < ?)", (now,))
                db.execute("DELETE FROM runs WHERE expires_at < ?", (now,))
                (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM results").fetchone()
                capped = 0
                if total > self._max_result_bytes_total:
                    oldest = db.execute("SELECT id, size FROM results ORDER BY finished_at, id").fetchall()
                    for invocation_id, size in oldest:
                        if total <= self._max_result_bytes_total:
                            break
                        db.execute("DELETE FROM results WHERE id = ?", (invocation_id,))
                        db.execute("UPDATE runs SET result_expired = 1 WHERE id = ?", (invocation_id,))
                        total -= size
                        capped += 1
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return dropped, capped

        dropped, capped = await self._run(expire)
        for invocation_id in dropped:
            self._notify(invocation_id)
        return len(dropped) + capped

    async def aclose(self) -> None:
        """Wake every follower (they end), close the connection in its thread, let the thread end."""
        if self._closed:
            return
        self._closed = True
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

        await self._database.close()
