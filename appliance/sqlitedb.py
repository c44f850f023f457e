"""A SQLite database the box must not lose: WAL journal, ``synchronous=FULL``, one connection per
thread (the API serves requests from a thread pool), file readable by its owner only."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from appliance.errors import StorageError


class Database:
    """The database at ``path`` with ``schema`` applied; ``what`` names it in errors."""

    def __init__(self, path: Path, schema: str, what: str) -> None:
        self.path = path
        self.what = what
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(schema)
        path.chmod(0o600)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, in autocommit mode: every statement commits durably."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(
                    self.path, isolation_level=None, timeout=30, check_same_thread=False
                )
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StorageError(
                    f"cannot open the {self.what} {self.path}: {exc}.",
                    "Check that the state partition is mounted read-write and not full.",
                ) from exc
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def rollback(db: sqlite3.Connection) -> None:
    """End ``db``'s open transaction, if any, keeping nothing of it. After a failed COMMIT
    (a full disk) SQLite may or may not have rolled back by itself: left open, the next
    statements on this connection would join the failed transaction and never commit."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
