"""A SQLite database the box must not lose: WAL journal, ``synchronous=FULL``, one connection per
thread (the API serves requests from a thread pool), file readable by its owner only, its schema
brought up to date by numbered migrations at open."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import StorageError


class Database:
    """The database at ``path`` with ``schema`` and ``migrations`` applied; ``what`` names it in
    errors.

    ``schema`` is the first release's (``CREATE ... IF NOT EXISTS``) and stays as it was: every
    change since is a statement in ``migrations``, the i-th taking the database from version i
    to i + 1 (SQLite's ``user_version``). A new database is made from ``schema`` and migrated the
    same way as one an older release left. Raises StorageError.
    """

    def __init__(self, path: Path, schema: str, what: str, migrations: Sequence[str] = ()) -> None:
        self.path = path
        self.what = what
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(schema)
        self._migrate(migrations)
        path.chmod(0o600)

    def _migrate(self, migrations: Sequence[str]) -> None:
        """Run the migrations this database lacks, with its new version, in one transaction: a
        crash keeps none of them, and another process opening it meanwhile waits, then finds it
        done. A database of a newer release (the box rolled back to this one) is left as it is:
        migrations only add columns and tables, which older code does not read."""
        if not migrations:
            return
        db = self.conn
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                for statement in migrations[version:]:
                    db.execute(statement)
                if version < len(migrations):
                    db.execute(f"PRAGMA user_version = {len(migrations):d}")
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot bring the {self.what} {self.path} up to date: {exc}.",
                "Check that the state partition is mounted read-write and not full; the update "
                "is tried again at the next start.",
            ) from exc

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
