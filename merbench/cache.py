"""Content-addressed on-disk cache of preprocessed arrays (no pickle).

The key is a SHA-256 of everything that determines the array: the sample id and source facts,
the step chain (names, versions, full parameters) and the providing plugins' versions. Each
entry is an ``.npy`` file written atomically beside a JSON sidecar holding its checksum; a
corrupt or truncated entry is detected on read, dropped and recomputed. A cache that cannot be
written (disk full, read-only) degrades to no caching with one warning; it never stops a run.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

from typing import Any, Callable

from .atomic import make_dir, remove_leftovers, write_bytes
from .errors import DataError

import numpy as np

log = logging.getLogger(__name__)
_UNWRITABLE: set[str] = set()  # cache roots this process found unwritable (warned once)


def default_cache_dir() -> Path:
    """MERBENCH_CACHE, else $XDG_CACHE_HOME/merbench, else ~/.cache/merbench."""
    if os.environ.get("MERBENCH_CACHE"):
        return Path(os.environ["MERBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "merbench"


def make_key(parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """Arrays by key under ``root/arrays/ab/abcdef....npy``."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / "arrays" / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def get(self, key: str) -> np.ndarray | None:
        entry = self.get_entry(key)
        return None if entry is None else entry[0]

    def get_entry(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(array, its JSON sidecar) or None when absent or damaged (then removed)."""
        if not self.enabled:
            return None
        data_path, meta_path = self._paths(key)
        if not data_path.exists() or not meta_path.exists():
            return None
        try:
            raw = data_path.read_bytes()
            meta = json.loads(meta_path.read_text())
            if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch")
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any damage means: recompute
            log.warning("cache entry %s is corrupt (%s); recomputing", key[:12], exc)
            for p in (data_path, meta_path):
                try:
                    p.unlink(missing_ok=True)
                except OSError:  # a read-only cache keeps it
                    pass
            return None
        return array, meta

    def put(self, key: str, array: np.ndarray, info: dict[str, Any] | None = None) -> None:
        if not self.enabled or str(self.root) in _UNWRITABLE:
            return
        data_path, meta_path = self._paths(key)
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        raw = buf.getvalue()
        meta = {"sha256": hashlib.sha256(raw).hexdigest(), "shape": list(np.shape(array)),
                "dtype": str(np.asarray(array).dtype), **(info or {})}
        try:
            make_dir(data_path.parent, "cache folder")
            write_bytes(data_path, raw)
            write_bytes(meta_path, json.dumps(meta, default=str).encode())
        except DataError as exc:  # a full or read-only cache: go on without it
            _UNWRITABLE.add(str(self.root))
            if not meta_path.exists():  # an array without its sidecar is never read: free it
                try:
                    data_path.unlink(missing_ok=True)
                except OSError:
                    pass
            log.warning("%s; continuing without the preprocessing cache", exc.problem)

    def remove_leftovers(self) -> int:
        """Remove the temporary files of cache writes that a kill interrupted."""
        arrays = self.root / "arrays"
        if not self.enabled or not arrays.is_dir():
            return 0
        return remove_leftovers([arrays] + [p for p in arrays.iterdir() if p.is_dir()])

    def get_or_compute(self, parts: Any, compute: Callable[[], np.ndarray],
                       info: dict[str, Any] | None = None) -> np.ndarray:
        return self.get_or_compute_noted(parts, lambda: (compute(), []), info)[0]

    def get_or_compute_noted(self, parts: Any,
                             compute: Callable[[], tuple[np.ndarray, list[str]]],
                             info: dict[str, Any] | None = None) -> tuple[np.ndarray, list[str]]:
        """Like :meth:`get_or_compute` for a computation that also reports notes (e.g. a
        preprocessing fallback); the notes are cached with the array and returned on a hit."""
        key = make_key(parts)
        hit = self.get_entry(key)
        if hit is not None:
            self.hits += 1
            return hit[0], list(hit[1].get("notes", []))
        self.misses += 1
        value, notes = compute()
        value = np.asarray(value)
        self.put(key, value, {**(info or {}), "notes": list(notes)})
        return value, list(notes)
