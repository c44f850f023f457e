"""The identity database: accounts, hashed session tokens, break-glass uses (SQLite).

WAL journal with ``synchronous=FULL``: a change is on disk when its transaction commits, so an
acknowledged account change or logout survives a power cut. Tokens are stored as SHA-256 hashes
only; a stolen database gives no usable token.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import StorageError
from appliance.identity.roles import Role
from appliance.sqlitedb import Database, rollback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    username TEXT NOT NULL REFERENCES accounts(username),
    kind TEXT NOT NULL,
    issued REAL NOT NULL,
    expires REAL NOT NULL,
    idle_timeout REAL NOT NULL,
    last_used REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS break_glass (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    acked_by TEXT,
    acked_at REAL
);
"""


@dataclass(frozen=True)
class Account:
    username: str
    role: Role
    password_hash: str | None
    created: float
    disabled: bool
    failed: int
    locked_until: float


@dataclass(frozen=True)
class TokenRow:
    id: str
    token_hash: str
    username: str
    kind: str
    issued: float
    expires: float
    idle_timeout: float
    last_used: float
    revoked: bool


@dataclass(frozen=True)
class BreakGlassUse:
    id: int
    username: str
    at: float
    reason: str
    acked_by: str | None
    acked_at: float | None


class IdentityStore:
    """Typed access to the identity database at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._database = Database(path, _SCHEMA, "identity database")
        # Per thread, a connection that never writes: its data_version moves with every commit
        # made by any other connection, in this process or another (the CLI revoking a token).
        self._watch = threading.local()
        self._watchers: list[sqlite3.Connection] = []
        self._watch_lock = threading.Lock()

    def version(self) -> int:
        """A number that changes whenever anyone commits to the database (cheap: no disk read).

        What this thread read while it stayed the same is still what the database holds. The
        numbers of two threads are not comparable.
        """
        watch: sqlite3.Connection | None = getattr(self._watch, "db", None)
        if watch is None:
            watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._watch.db = watch
            with self._watch_lock:
                self._watchers.append(watch)
        return int(watch.execute("PRAGMA data_version").fetchone()[0])

    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.conn

    def close(self) -> None:
        self._database.close()
        with self._watch_lock:
            for watch in self._watchers:
                watch.close()
            self._watchers.clear()
        self._watch = threading.local()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed durably when the block ends.

        Raises StorageError when the database cannot be written (a full disk, SQLite's own
        error wrapped here, where it enters): nothing of the block is committed then.
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                rollback(db)
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(db)  # a failed COMMIT may leave the transaction open
            raise StorageError(
                f"cannot write the identity database {self.path}: {exc}.",
                "The change was not made. Free space on the state partition (or check that it "
                "is mounted read-write), then try again.",
            ) from exc

    def count_accounts(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM accounts").fetchone()[0])

    def account(self, username: str) -> Account | None:
        row = self._db.execute(
            "SELECT username, role, password_hash, created, disabled, failed, locked_until "
            "FROM accounts WHERE username = ?",
            (username,),
        ).fetchone()
        if row is None:
            return None
        return Account(row[0], Role(row[1]), row[2], row[3], bool(row[4]), row[5], row[6])

    def accounts(self) -> list[Account]:
        names = [r[0] for r in self._db.execute("SELECT username FROM accounts ORDER BY username")]
        return [a for a in map(self.account, names) if a is not None]

    def token(self, token_id: str) -> TokenRow | None:
        row = self._db.execute(
            "SELECT id, token_hash, username, kind, issued, expires, idle_timeout, last_used, "
            "revoked FROM tokens WHERE id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        return TokenRow(
            id=row[0],
            token_hash=row[1],
            username=row[2],
            kind=row[3],
            issued=row[4],
            expires=row[5],
            idle_timeout=row[6],
            last_used=row[7],
            revoked=bool(row[8]),
        )

    def break_glass_uses(self, *, unacknowledged_only: bool) -> list[BreakGlassUse]:
        where = "WHERE acked_at IS NULL" if unacknowledged_only else ""
        rows = self._db.execute(
            f"SELECT id, username, at, reason, acked_by, acked_at FROM break_glass {where} "  # noqa: S608
            "ORDER BY id"
        ).fetchall()
        return [BreakGlassUse(*r) for r in rows]
