"""The results store: one SQLite file holding runs, finished folds and per-sample predictions.

Every fold is written in one transaction together with its predictions, so a run killed at
any point keeps exactly the folds that finished; WAL mode and a busy timeout let two runs
write to one store at once.
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import DataError

DEFAULT_STORE = Path("merbench-results") / "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    protocol TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    versions TEXT NOT NULL,
    git_commit TEXT,
    device TEXT,
    host TEXT,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(key);
CREATE TABLE IF NOT EXISTS folds (
    run_id TEXT NOT NULL REFERENCES runs(id),
    fold_index INTEGER NOT NULL,
    name TEXT NOT NULL,
    seed INTEGER NOT NULL,
    started TEXT NOT NULL,
    ended TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, fold_index)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs(id),
    fold_index INTEGER NOT NULL,
    sample_id TEXT NOT NULL,
    y_true TEXT NOT NULL,
    y_pred TEXT NOT NULL,
    proba TEXT NOT NULL,
    PRIMARY KEY (run_id, sample_id)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunRecord:
    id: str
    key: str
    protocol: str
    method: str
    params: dict[str, Any]
    seed: int
    versions: dict[str, Any]
    git_commit: str | None
    device: str | None
    host: str | None
    started: str
    ended: str | None
    status: str
    info: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "RunRecord":
        d = dict(row)
        for k in ("params", "versions", "info"):
            d[k] = json.loads(d[k])
        return cls(**d)


@dataclass(frozen=True)
class StoredPrediction:
    sample_id: str
    fold_index: int
    fold: str
    y_true: str
    y_pred: str
    proba: dict[str, float]


class Store:
    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"results store {self.path} cannot be opened: {exc}",
                            "point --store at another file; the existing file is left as it is"
                            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=60000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, *, key: str, protocol: str, method: str, params: dict[str, Any],
                   seed: int, versions: dict[str, Any], git_commit: str | None,
                   device: str | None, host: str | None, info: dict[str, Any]) -> str:
        run_id = uuid.uuid4().hex[:12]
        with self._transaction() as con:
            con.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (run_id, key, protocol, method, json.dumps(params, sort_keys=True), seed,
                         json.dumps(versions, sort_keys=True), git_commit, device, host, now(),
                         None, "running", json.dumps(info, sort_keys=True, default=str)))
        return run_id

    def latest(self, key: str) -> RunRecord | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE key=? ORDER BY started DESC, rowid DESC "
                              "LIMIT 1", (key,)).fetchone()
        return RunRecord.from_row(row) if row else None

    def set_status(self, run_id: str, status: str, info: dict[str, Any] | None = None) -> None:
        with self._transaction() as con:
            ended = now() if status in ("finished", "failed", "interrupted") else None
            # a finished run stays finished (a second, concurrent command cannot demote it)
            con.execute("UPDATE runs SET status=?, ended=? WHERE id=? AND status != 'finished'",
                        (status, ended, run_id))
            if info is not None:
                old = json.loads(con.execute("SELECT info FROM runs WHERE id=?",
                                             (run_id,)).fetchone()[0])
                old.update(info)
                con.execute("UPDATE runs SET info=? WHERE id=?",
                            (json.dumps(old, sort_keys=True, default=str), run_id))

    def run(self, run_id: str) -> RunRecord:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs WHERE id=? OR id LIKE ?",
                               (run_id, run_id + "%")).fetchall()
        if len(rows) != 1:
            raise DataError(f"no single run {run_id!r} in {self.path}",
                            "see the run ids with `merbench leaderboard --format json`")
        return RunRecord.from_row(rows[0])

    def runs(self, protocol: str | None = None, status: str | None = "finished") -> list[RunRecord]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if protocol:
            sql += " AND protocol=?"
            args.append(protocol)
        if status:
            sql += " AND status=?"
            args.append(status)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY started, rowid", args).fetchall()
        return [RunRecord.from_row(r) for r in rows]

    # -- folds ------------------------------------------------------------------------------
    def add_fold(self, run_id: str, fold_index: int, name: str, seed: int, started: str,
                 predictions: Sequence[tuple[str, str, str, dict[str, float]]],
                 info: dict[str, Any] | None = None) -> None:
        """Store a finished fold and its predictions (sample id, true, pred, proba) atomically."""
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO folds VALUES (?,?,?,?,?,?,?)",
                        (run_id, fold_index, name, seed, started, now(),
                         json.dumps(info or {}, sort_keys=True, default=str)))
            con.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?)",
                            [(run_id, fold_index, sid, t, p, json.dumps(proba))
                             for sid, t, p, proba in predictions])

    def done_folds(self, run_id: str) -> dict[int, str]:
        with self._connect() as con:
            rows = con.execute("SELECT fold_index, name FROM folds WHERE run_id=?",
                               (run_id,)).fetchall()
        return {int(r[0]): r[1] for r in rows}

    def fold_info(self, run_id: str) -> dict[int, dict[str, Any]]:
        with self._connect() as con:
            rows = con.execute("SELECT fold_index, info FROM folds WHERE run_id=?",
                               (run_id,)).fetchall()
        return {int(r[0]): json.loads(r[1]) for r in rows}

    def predictions(self, run_id: str) -> list[StoredPrediction]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT p.sample_id, p.fold_index, f.name, p.y_true, p.y_pred, p.proba "
                "FROM predictions p JOIN folds f ON f.run_id=p.run_id AND "
                "f.fold_index=p.fold_index WHERE p.run_id=? ORDER BY p.fold_index, p.sample_id",
                (run_id,)).fetchall()
        return [StoredPrediction(r[0], int(r[1]), r[2], r[3], r[4], json.loads(r[5]))
                for r in rows]
