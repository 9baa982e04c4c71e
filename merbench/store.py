"""The results store: one SQLite file holding runs, finished folds and per-sample predictions.

Every fold is written in one transaction together with its predictions, so a run killed at
any point keeps exactly the folds that finished; WAL mode and a busy timeout let two runs
write to one store at once. A store opened ``readonly`` (the leaderboard) is never written, so
it can be read from read-only media. SQLite failures (a damaged file, a full disk, a read-only
folder) are one-line :class:`~merbench.errors.DataError`\\ s naming the store file.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import DataError

log = logging.getLogger(__name__)

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
    def from_row(cls, row: sqlite3.Row, where: str = "results store") -> "RunRecord":
        d = dict(row)
        for k in ("params", "versions", "info"):
            d[k] = _json(d[k], f"{where}: run {d.get('id')} column {k}")
        return cls(**d)


def _json(text: Any, where: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} is not valid JSON ({exc})", "the store is damaged: restore it "
                        "from a backup, or rerun into a new --store") from exc


@dataclass(frozen=True)
class StoredPrediction:
    sample_id: str
    fold_index: int
    fold: str
    y_true: str
    y_pred: str
    proba: dict[str, float]


class Store:
    def __init__(self, path: str | Path = DEFAULT_STORE, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._immutable = False
        if readonly:
            if not self.path.is_file():
                raise DataError(f"results store {self.path} does not exist",
                                "check the --store path")
            with self._connect() as con:  # fails here, clearly, on a file that is no store
                con.execute("SELECT count(*) FROM runs").fetchone()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from .atomic import os_error

            raise os_error(self.path.parent, exc, "create the store folder") from exc
        with self._connect() as con:
            con.executescript(SCHEMA)

    def _error(self, exc: sqlite3.Error) -> DataError:
        """One line for an SQLite failure, naming the store file and the fix."""
        text = str(exc)
        low = text.lower()
        if "malformed" in low or "not a database" in low or "encrypted" in low \
                or "no such table" in low or "no such column" in low:
            return DataError(f"results store {self.path} is damaged or not a merbench store "
                             f"({text})", "restore it from a backup, or point --store at a new "
                             "file; the damaged one is left as it is")
        if "readonly" in low or "read-only" in low:
            return DataError(f"cannot write results store {self.path}: it is read-only",
                             "choose a writable --store")
        if "full" in low:
            return DataError(f"cannot write results store {self.path}: the disk is full",
                             "free some space or choose another --store")
        if "unable to open" in low:
            return DataError(f"cannot open or create results store {self.path} (is its folder "
                             "read-only?)", "choose a writable --store")
        if "locked" in low or "busy" in low:
            return DataError(f"results store {self.path} stayed locked by another process",
                             "wait for the other merbench command, or use another --store")
        return DataError(f"results store {self.path} cannot be used: {text}",
                         "check the path and its permissions, or point --store at another file")

    def _open(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=60, isolation_level=None)
        uri = f"file:{self.path.resolve()}?mode=ro" + ("&immutable=1" if self._immutable else "")
        try:
            con = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
            return con
        except sqlite3.OperationalError:
            if self._immutable:
                raise
            # a WAL store on read-only media: the -shm file cannot be made; read it as it is
            log.info("results store %s opened as immutable (read-only media)", self.path)
            self._immutable = True
            return self._open()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = self._open()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        con.row_factory = sqlite3.Row
        try:
            if not self.readonly:
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=60000")
            yield con
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
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
        return RunRecord.from_row(row, str(self.path)) if row else None

    def set_status(self, run_id: str, status: str, info: dict[str, Any] | None = None) -> None:
        with self._transaction() as con:
            ended = now() if status in ("finished", "failed", "interrupted") else None
            # a finished run stays finished (a second, concurrent command cannot demote it)
            con.execute("UPDATE runs SET status=?, ended=? WHERE id=? AND status != 'finished'",
                        (status, ended, run_id))
            if info is not None:
                old = _json(con.execute("SELECT info FROM runs WHERE id=?",
                                        (run_id,)).fetchone()[0], f"{self.path}: run {run_id} info")
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
        return RunRecord.from_row(rows[0], str(self.path))

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
        return [RunRecord.from_row(r, str(self.path)) for r in rows]

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
        return {int(r[0]): _json(r[1], f"{self.path}: run {run_id} fold {r[0]} info")
                for r in rows}

    def predictions(self, run_id: str) -> list[StoredPrediction]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT p.sample_id, p.fold_index, f.name, p.y_true, p.y_pred, p.proba "
                "FROM predictions p JOIN folds f ON f.run_id=p.run_id AND "
                "f.fold_index=p.fold_index WHERE p.run_id=? ORDER BY p.fold_index, p.sample_id",
                (run_id,)).fetchall()
        return [StoredPrediction(r[0], int(r[1]), r[2], r[3], r[4],
                                 _json(r[5], f"{self.path}: run {run_id} prediction {r[0]}"))
                for r in rows]

    def damage(self, run_id: str) -> list[str]:
        """Why a stored run cannot be trusted as complete: folds missing against its recorded
        fold count, a fold whose predictions do not match its test count, predictions of no
        stored fold. Empty for an intact run."""
        rec = self.run(run_id)
        problems = []
        with self._connect() as con:
            folds = {int(r[0]): r for r in con.execute(
                "SELECT fold_index, name, info FROM folds WHERE run_id=?", (rec.id,))}
            counts = dict(con.execute("SELECT fold_index, count(*) FROM predictions WHERE "
                                      "run_id=? GROUP BY fold_index", (rec.id,)).fetchall())
        expected = rec.info.get("n_folds")
        if isinstance(expected, int) and len(folds) != expected:
            missing = sorted(set(range(expected)) - set(folds))
            problems.append(f"{expected - len(folds)} of its {expected} folds are missing"
                            + (f" (fold index {', '.join(map(str, missing[:5]))})" if missing
                               else ""))
        for index, row in sorted(folds.items()):
            n_test = _json(row[2], f"{self.path}: run {rec.id} fold {index} info").get("n_test")
            if isinstance(n_test, int) and counts.get(index, 0) != n_test:
                problems.append(f"fold {row[1]} has {counts.get(index, 0)} of its {n_test} "
                                "predictions")
        orphans = sum(n for index, n in counts.items() if index not in folds)
        if orphans:
            problems.append(f"{orphans} predictions belong to no stored fold")
        return problems
