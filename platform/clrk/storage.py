"""A SQLite file of clrk's own: readable by its owner only, queried off the event loop.

The egress gateway's budget counters (:class:`clrk.egress.budgets.SqliteBudgets`) and ``clrk
dev``'s async invocations (:class:`clrk.ingress.run_files.FileRunStore`) each keep one, under the
state directory, which agents may list (never read). :class:`PrivateDatabase` is what both need:

- the file is created 0600 before SQLite opens it (SQLite gives ``-wal`` and ``-shm`` the mode of
  the database file), and each of the three files is set to 0600 once the database is in WAL mode,
  so that files an earlier start left with a wider mode (a crash before the chmod) are narrowed
  too; never through the process umask, since the process serves other things on other threads;
- one worker thread holds the connection and runs every query in order (:meth:`run`), so the
  serving loop never waits on the disk and no two queries of the process interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["PrivateDatabase"]

BUSY_TIMEOUT_MS = 5000
"""How long a query waits for another process's write lock before it fails."""


class PrivateDatabase:
    """One SQLite database at ``path`` (WAL), made with ``schema`` (``CREATE … IF NOT EXISTS``
    statements) when first opened; ``name`` names its worker thread."""

    def __init__(self, path: Path, schema: Sequence[str], *, name: str) -> None:
        """Opens nothing yet: the worker opens the file on the first query."""
        self.path = path
        self._schema = tuple(schema)
        self._db: sqlite3.Connection | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def files(self) -> tuple[Path, ...]:
        """The database and the files SQLite keeps beside it in WAL mode."""
        return (self.path, *(self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in self._schema:
                db.execute(statement)
            for file in self.files():
                with contextlib.suppress(FileNotFoundError):
                    file.chmod(0o600)
        except BaseException:
            db.close()
            raise
        return db

    async def run[T](self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(connection)`` in the worker thread, after the queries queued before it."""

        def in_worker() -> T:
            if self._db is None:
                self._db = self._connect()
            return query(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._worker, in_worker)

    async def close(self) -> None:
        """Close the connection in its thread (after queued queries), then let the thread end."""

        def close() -> None:
            db, self._db = self._db, None
            if db is not None:
                db.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, close)
        finally:
            self._worker.shutdown(wait=False)
