"""The preprocessing cache (content-addressed, checksummed, no pickle) and the SQLite store."""
from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from merbench.cache import Cache, default_cache_dir, make_key
from merbench.errors import DataError
from merbench.store import Store


# -- cache --------------------------------------------------------------------------------------
def test_default_cache_dir_is_the_test_session_cache(_private_cache: Path) -> None:
    assert default_cache_dir() == _private_cache == Path(os.environ["MERBENCH_CACHE"])
    assert Cache().root == _private_cache


def test_keys_depend_on_content_not_dict_order() -> None:
    assert make_key({"a": 1, "b": [1, 2]}) == make_key({"b": [1, 2], "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})
    assert len(make_key(["x"])) == 64


def test_put_get_round_trip(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    key = make_key(["sample", 1])
    assert cache.get(key) is None
    cache.put(key, array, info={"sample": "x/s1/c"})
    got = cache.get(key)
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_array_equal(got, array)
    data = tmp_path / "arrays" / key[:2] / f"{key}.npy"
    meta = json.loads((tmp_path / "arrays" / key[:2] / f"{key}.json").read_text())
    assert meta["shape"] == [3, 4] and meta["dtype"] == "float32" and meta["sample"] == "x/s1/c"
    # plain .npy, readable without pickle
    np.testing.assert_array_equal(np.load(data, allow_pickle=False), array)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_object_arrays_are_never_pickled(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allow_pickle"):
        Cache(tmp_path).put(make_key(["obj"]), np.array([{"a": 1}], dtype=object))


def test_corrupt_entry_is_detected_removed_and_recomputed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.linspace(0, 1, 50)

    parts = ["x/s1/c", "chain", 1]
    first = cache.get_or_compute(parts, compute)
    again = cache.get_or_compute(parts, compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, again)

    key = make_key(parts)
    data = tmp_path / "arrays" / key[:2] / f"{key}.npy"
    raw = bytearray(data.read_bytes())
    raw[-9] ^= 0xFF  # flip bits of one stored value: a valid .npy, but the wrong numbers
    data.write_bytes(bytes(raw))
    assert cache.get(key) is None
    assert not data.exists() and not data.with_suffix(".json").exists()
    recomputed = cache.get_or_compute(parts, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(recomputed, first)
    assert cache.get(key) is not None

    data.write_bytes(data.read_bytes()[:40])  # truncated
    assert cache.get_or_compute(parts, compute) is not None and len(calls) == 3


def test_disabled_cache_reads_and_writes_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "off", enabled=False)
    calls = []
    for _ in range(2):
        cache.get_or_compute(["k"], lambda: calls.append(1) or np.zeros(2))
    assert len(calls) == 2 and not (tmp_path / "off").exists()


# -- store --------------------------------------------------------------------------------------
def _new_run(store: Store, key: str = "k", seed: int = 0) -> str:
    return store.create_run(key=key, protocol="p", method="m", params={"model.C": 0.1},
                            seed=seed, versions={"merbench": "0"}, git_commit=None, device="cpu",
                            host="h", info={"classes": ["a", "b"]})


def test_store_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "results.sqlite")
    run_id = _new_run(store)
    rec = store.run(run_id[:6])  # a unique prefix finds the run
    assert (rec.id, rec.status, rec.params, rec.info) == (run_id, "running", {"model.C": 0.1},
                                                          {"classes": ["a", "b"]})
    store.add_fold(run_id, 1, "s2", 11, "2024-01-01T00:00:00+00:00",
                   [("x/s2/a", "a", "b", {"a": 0.25, "b": 0.75})], info={"n_train": 3})
    store.add_fold(run_id, 0, "s1", 10, "2024-01-01T00:00:00+00:00",
                   [("x/s1/b", "b", "b", {"a": 0.1, "b": 0.9}),
                    ("x/s1/a", "a", "a", {"a": 0.6, "b": 0.4})])
    assert store.done_folds(run_id) == {0: "s1", 1: "s2"}
    assert store.fold_info(run_id) == {0: {}, 1: {"n_train": 3}}
    preds = store.predictions(run_id)
    assert [(p.sample_id, p.fold, p.y_pred) for p in preds] == [
        ("x/s1/a", "s1", "a"), ("x/s1/b", "s1", "b"), ("x/s2/a", "s2", "b")]
    assert preds[2].proba == {"a": 0.25, "b": 0.75}
    assert store.runs() == []  # only finished runs by default
    store.set_status(run_id, "finished", {"note": "done"})
    rec = store.run(run_id)
    assert rec.status == "finished" and rec.ended is not None
    assert rec.info == {"classes": ["a", "b"], "note": "done"}
    assert [r.id for r in store.runs(protocol="p")] == [run_id]
    assert store.latest("k").id == run_id and store.latest("other") is None
    with pytest.raises(DataError, match="no single run 'zzz'"):
        store.run("zzz")


def test_a_fold_is_written_with_its_predictions_or_not_at_all(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    run_id = _new_run(store)
    bad = [("x/s1/a", "a", "a", {"a": 1.0}), ("x/s1/b", "b", "a", {"a": object()})]
    with pytest.raises(TypeError):
        store.add_fold(run_id, 0, "s1", 1, "t", bad)
    assert store.done_folds(run_id) == {}
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM folds").fetchone()[0] == 0


def test_a_file_that_is_not_a_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(DataError, match="is damaged or not a merbench store"):
        Store(path)
    assert path.read_bytes() == b"definitely not sqlite" * 100


def _writer(path: str, tag: str, n: int, barrier) -> None:
    store = Store(path)
    run_id = _new_run(store, key=tag)
    barrier.wait(60)  # both processes write their folds at the same time
    for k in range(n):
        store.add_fold(run_id, k, f"{tag}-{k}", k, "t",
                       [(f"{tag}/s{k}/{j}", "a", "b", {"a": 0.5, "b": 0.5}) for j in range(3)])
    store.set_status(run_id, "finished")


def test_two_processes_write_to_one_store_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, tag, 20, barrier)) for tag in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store(path)
    runs = store.runs()
    assert sorted(r.key for r in runs) == ["p1", "p2"]
    for rec in runs:
        assert len(store.done_folds(rec.id)) == 20
        assert len(store.predictions(rec.id)) == 60
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM folds").fetchone()[0] == 40
        assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 120


def test_a_finished_run_is_never_demoted(tmp_path: Path) -> None:
    from merbench.store import Store

    st = Store(tmp_path / "s.sqlite")
    run_id = st.create_run(key="k", protocol="p", method="m", params={}, seed=0, versions={},
                           git_commit=None, device=None, host=None, info={})
    st.set_status(run_id, "finished")
    st.set_status(run_id, "interrupted")  # e.g. a second command on the same run stopping
    assert st.run(run_id).status == "finished"


# -- the cache key covers the frame files ----------------------------------------------------
def _release_clip(folder: Path) -> tuple[object, object]:
    import cv2

    import merbench
    from merbench.datasets import Dataset
    from merbench.types import Sample

    folder.mkdir()
    for k in range(1, 9):
        cv2.imwrite(str(folder / f"img{k}.png"), np.full((32, 32, 3), 10 * k, np.uint8))
    sample = Sample("x", "s1", "c", "negative", onset=1, apex=5, offset=8, path=str(folder))
    return Dataset([sample], name="x"), merbench.method("diff-logreg")


def test_an_overwritten_frame_is_never_served_stale(tmp_path: Path) -> None:
    import cv2

    from merbench.preprocess import preprocess

    ds, meth = _release_clip(tmp_path / "clip")
    cache = tmp_path / "cache"
    first = preprocess(meth, {"x": ds}, ds.samples, cache_root=str(cache)).X
    assert first.mean() == pytest.approx(40.0)  # apex 50 - onset 10
    apex = tmp_path / "clip" / "img5.png"
    cv2.imwrite(str(apex), np.full((32, 32, 3), 90, np.uint8))
    second = preprocess(meth, {"x": ds}, ds.samples, cache_root=str(cache)).X
    assert second.mean() == pytest.approx(80.0)
    assert len(list(cache.rglob("*.npy"))) == 2


def test_a_frame_restored_with_its_old_mtime_gets_a_new_key(tmp_path: Path) -> None:
    """``cp -p``, ``rsync -a`` and tar keep mtimes: size and mtime alone would match."""
    import cv2

    ds, _ = _release_clip(tmp_path / "clip")
    sample = ds.samples[0]
    apex = tmp_path / "clip" / "img5.png"
    original = ds.fingerprint(sample)
    st = apex.stat()
    cv2.imwrite(str(apex), np.full((32, 32, 3), 77, np.uint8))  # same size for a flat image
    os.utime(apex, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert apex.stat().st_size == st.st_size and apex.stat().st_mtime_ns == st.st_mtime_ns
    assert ds.fingerprint(sample) != original
    assert [row[0] for row in original] == [f"img{k}.png" for k in range(1, 9)]


def test_a_full_cache_warns_once_and_keeps_computing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import errno

    import merbench.cache as cache_module
    from merbench.atomic import os_error

    def full(path: Path, data: bytes) -> Path:
        raise os_error(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(cache_module, "_UNWRITABLE", set())
    monkeypatch.setattr(cache_module, "write_bytes", full)
    cache = Cache(tmp_path / "c")
    for k in range(3):
        assert cache.get_or_compute(["k", k], lambda: np.arange(3) + k).tolist() == \
            [k, k + 1, k + 2]
    assert caplog.text.count("continuing without the preprocessing cache") == 1
    assert list((tmp_path / "c").rglob("*.npy")) == []
