"""Durable results: every answer is in SQLite (WAL, synchronous=FULL) before it is sent.

A result row holds the request id, who asked, the provenance (model, version, bundle digest,
device, OpenVINO version), a SHA-256 of the inputs (not the inputs: they may be PHI) and the
outputs as JSON. It commits before the response leaves, so a client that got an answer can always
fetch it again by request id, whatever happened to the server afterwards.

Rows are kept ``results_retention_days`` (:meth:`ResultStore.prune`, run hourly by
appliance/housekeeping.py); after that a request id answers "no result".

Under load the rows are group-committed (ADR 0009): a committer thread inserts every queued row in
one transaction, which SQLite makes durable with one WAL sync, and only then wakes the callers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, StorageError
from appliance.groupcommit import GroupCommitter
from appliance.sqlitedb import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    request_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    actor TEXT NOT NULL,
    route TEXT NOT NULL,
    provenance TEXT NOT NULL,
    inputs_sha256 TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_created ON results(created);
"""


class ResultNotFoundError(ApplianceError):
    """No result with that request id."""


@dataclass(frozen=True)
class StoredResult:
    request_id: str
    created: float
    actor: str
    route: str
    provenance: Mapping[str, str]
    inputs_sha256: str
    outputs: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "created": self.created, "actor": self.actor,
            "route": self.route, "provenance": dict(self.provenance),
            "inputs_sha256": self.inputs_sha256, "outputs": self.outputs,
        }  # fmt: skip


class EncodedJson(str):
    """Outputs already encoded as JSON text: stored as they are (see :func:`outputs_json`)."""

    __slots__ = ()


def outputs_json(entries: Sequence[Mapping[str, Any]], blobs: Sequence[bytes]) -> EncodedJson:
    """``entries`` as JSON, each one with ``parameters`` (a binary output) given the next of
    ``blobs`` as ``data_base64``: the text ``json.dumps`` would make of them, made without
    scanning the base64 for characters to escape (it has none). A heat map's 87 kB of base64
    cost json.dumps about 0.15 ms, on the event loop."""
    chunks = iter(blobs)
    parts = []
    for entry in entries:
        text = json.dumps(entry)
        if "parameters" in entry:
            data = base64.b64encode(next(chunks)).decode("ascii")
            text = f'{text[:-1]}, "data_base64": "{data}"}}'
        parts.append(text)
    return EncodedJson(f"[{', '.join(parts)}]")


Row = tuple[str, float, str, str, str, str, str]
_INSERT = "INSERT INTO results VALUES (?,?,?,?,?,?,?)"
PRUNE_CHUNK = 500


def _row(
    request_id: str, created: float, actor: str, route: str, provenance: Mapping[str, str],
    inputs_sha256: str, outputs: Any,
) -> Row:  # fmt: skip
    text = outputs if isinstance(outputs, EncodedJson) else json.dumps(outputs)
    return (request_id, created, actor, route, json.dumps(dict(provenance)), inputs_sha256,
            text)  # fmt: skip


def _not_stored(request_id: str, exc: sqlite3.Error) -> StorageError:
    return StorageError(
        f"cannot store the result {request_id}: {exc}.",
        "The answer was not sent; retry. If it persists, check the state partition.",
    )


class ResultStore:
    """The results database; one connection per thread, every write committed durably.

    ``put`` commits one row on the caller's thread. ``put_grouped`` and ``put_async`` hand the
    row to the committer thread (started on first use), which commits a batch of rows per
    transaction; with ``group_commit=False`` (the per-request path, kept for comparison in the
    benchmark) they commit on a thread of their own instead.
    """

    def __init__(
        self, path: Path, *, group_commit: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        """``clock`` stamps each row's ``created``, which retention counts from (the box passes
        a :class:`~appliance.retention.StampClock`)."""
        self.path = path
        self.group_commit = group_commit
        self.clock = clock
        self._database = Database(path, _SCHEMA, "results database")
        self._committer: GroupCommitter[Row, None] | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        return self._database.conn

    def put(
        self, request_id: str, *, actor: str, route: str, provenance: Mapping[str, str],
        inputs_sha256: str, outputs: Any,
    ) -> None:  # fmt: skip
        """Store a result durably; returns only once it is on disk."""
        self._put_one(
            _row(request_id, self.clock(), actor, route, provenance, inputs_sha256, outputs)
        )

    def put_grouped(
        self, request_id: str, *, actor: str, route: str, provenance: Mapping[str, str],
        inputs_sha256: str, outputs: Any,
    ) -> None:  # fmt: skip
        """As :meth:`put`, group-committed: returns once the row's transaction is durable."""
        row = _row(request_id, self.clock(), actor, route, provenance, inputs_sha256, outputs)
        if not self.group_commit:
            self._put_one(row)
            return
        self._group().write(row)

    async def put_async(
        self, request_id: str, *, actor: str, route: str, provenance: Mapping[str, str],
        inputs_sha256: str, outputs: Any,
    ) -> None:  # fmt: skip
        """As :meth:`put_grouped`, awaited without blocking the event loop."""
        row = _row(request_id, self.clock(), actor, route, provenance, inputs_sha256, outputs)
        if not self.group_commit:
            await asyncio.to_thread(self._put_one, row)
            return
        await self._group().submit_async(row)

    def _group(self) -> GroupCommitter[Row, None]:
        with self._lock:
            if self._committer is None:
                self._committer = GroupCommitter("results-commit", self._put_many)
            return self._committer

    def _put_one(self, row: Row) -> None:
        try:
            self._db().execute(_INSERT, row)
        except sqlite3.Error as exc:
            raise _not_stored(row[0], exc) from exc

    def _put_many(self, rows: Sequence[Row]) -> list[None | BaseException]:
        """Insert ``rows`` in one transaction (one WAL sync); on a failure, row by row, so that
        one bad row (a duplicate id) fails alone."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT, rows)
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
        else:
            return [None] * len(rows)
        out: list[None | BaseException] = []
        for row in rows:
            try:
                db.execute(_INSERT, row)
                out.append(None)
            except sqlite3.Error as exc:
                out.append(_not_stored(row[0], exc))
        return out

    def close(self) -> None:
        """Commit what is queued and stop the committer thread."""
        if self._committer is not None:
            self._committer.close()

    def get(self, request_id: str) -> StoredResult:
        row = (
            self._db()
            .execute(
                "SELECT request_id, created, actor, route, provenance, inputs_sha256, outputs "
                "FROM results WHERE request_id = ?",
                (request_id,),
            )
            .fetchone()
        )
        if row is None:
            raise ResultNotFoundError(
                f"there is no result with request id '{request_id}'.",
                "Use the request id returned with the answer (the X-Request-Id header). Results "
                "are kept results_retention_days (90 unless the box's settings say otherwise).",
            )
        return StoredResult(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5],
                            json.loads(row[6]))  # fmt: skip

    def older_than(self, before: float) -> int:
        """How many results were stored before ``before`` (seconds since the epoch)."""
        row = self._db().execute("SELECT count(*) FROM results WHERE created < ?", (before,))
        return int(row.fetchone()[0])

    def prune(self, before: float, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete the results stored before ``before``; return how many went.

        Deletes ``chunk`` rows per transaction, so that the API's writes wait milliseconds at
        most. SQLite reuses the freed pages for new rows: the file stops growing, it does not
        shrink. Raises StorageError when the database cannot be written.
        """
        db, gone = self._db(), 0
        try:
            while True:
                n = db.execute(
                    "DELETE FROM results WHERE rowid IN "
                    "(SELECT rowid FROM results WHERE created < ? LIMIT ?)",
                    (before, chunk),
                ).rowcount
                gone += n
                if n < chunk:
                    return gone
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot delete old results ({gone} deleted so far): {exc}.",
                "Check that the state partition is writable; the next round tries again.",
            ) from exc

    def count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM results").fetchone()[0])
