"""Runs a protocol with a method: preprocess (cached), then every fold, into the results store.

Test samples never reach ``fit``: each fold's model is built fresh and fitted on the fold's
training ids only. Finished folds are stored one transaction each, so running the same
command again after an interruption resumes at the first unfinished fold.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .cache import Cache
from .datasets import Dataset
from .errors import CheckpointError, ConfigError, DataError, MerbenchError
from .ids import normalise_subject
from .methods import Method
from .metrics import Prediction, report
from .protocols import Protocol, load_protocol
from .store import DEFAULT_STORE, Store, now
from .types import Fold, Sample

log = logging.getLogger(__name__)


def fold_seed(seed: int, fold_name: str) -> int:
    """Per-fold seed derived from the run seed and the fold (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{fold_name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class RunResult:
    run_id: str
    protocol: Protocol
    method: str
    seed: int
    report: dict[str, Any]
    predictions: list[Prediction]
    resumed_folds: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def uf1(self) -> float:
        return self.report["pooled"].uf1

    @property
    def uar(self) -> float:
        return self.report["pooled"].uar


def versions() -> dict[str, Any]:
    from . import __version__
    from .plugins import plugin_versions

    out: dict[str, Any] = {"merbench": __version__, "python": platform.python_version(),
                           "numpy": np.__version__, "plugins": plugin_versions()}
    for package in ("torch", "scikit-learn", "opencv-contrib-python-headless"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the merbench checkout, when it runs from one."""
    here = Path(__file__).resolve().parent.parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != here:
            return None  # installed inside someone else's repository: not our commit
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe_device(device: str) -> str:
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


class SubsetDataset(Dataset):
    """The samples one protocol dataset takes from a precomputed-inputs index (``--inputs``)."""

    def __init__(self, source: Dataset, name: str) -> None:
        self.source = source
        samples = [s for s in source.samples if s.dataset == name]
        super().__init__(samples, name=name, label_spaces=source.label_spaces,
                         classes=getattr(source, "_classes", None))

    def load(self, sample: Sample) -> Any:
        return self.source.load(sample)


# -- preprocessing ---------------------------------------------------------------------------
def _cache_parts(sample: Sample, chain: Any) -> list[Any]:
    meta = [(k, v) for k, v in sample.meta if k not in ("native_label", "dataset_label")]
    return [sample.id, sample.path, sample.onset, sample.apex, sample.offset, meta, chain]


def _preprocess_chunk(method: Method, datasets: Mapping[str, Dataset], samples: list[Sample],
                      cache_root: str | None, use_cache: bool,
                      skip_bad: bool) -> list[tuple[str, np.ndarray | None, str | None]]:
    # precomputed inputs are only loaded: caching a copy would just hide later edits of the files
    cache = Cache(cache_root, enabled=use_cache and bool(method.steps))
    steps = method.build_steps()
    chain = method.step_chain_key()
    out: list[tuple[str, np.ndarray | None, str | None]] = []
    for s in samples:
        ds = datasets[s.dataset]
        try:
            x = cache.get_or_compute(_cache_parts(s, chain),
                                     lambda: method.preprocess(ds.load(s), steps),
                                     info={"sample": s.id, "method": method.name})
            out.append((s.id, x, None))
        except MerbenchError as exc:
            if not skip_bad:
                raise
            out.append((s.id, None, str(exc)))
    return out


def preprocess(method: Method, datasets: Mapping[str, Dataset], samples: Sequence[Sample],
               cache_root: str | None = None, use_cache: bool = True, workers: int = 1,
               skip_bad: bool = False, progress: bool = False) -> tuple[np.ndarray, list[Sample],
                                                                       dict[str, str]]:
    """Arrays for every sample (cached); returns (X, kept samples, skipped id -> reason)."""
    samples = list(samples)
    chunks = [samples[i::max(workers, 1) * 4] for i in range(max(workers, 1) * 4)]
    chunks = [c for c in chunks if c]
    results: dict[str, tuple[np.ndarray | None, str | None]] = {}
    bar = progress_bar(len(samples), "preprocess", progress)
    if workers <= 1 or len(samples) < 8:
        for chunk in chunks:
            for sid, x, err in _preprocess_chunk(method, datasets, chunk, cache_root, use_cache,
                                                 skip_bad):
                results[sid] = (x, err)
                bar.update(1)
    else:
        with _pool(workers) as pool:
            futures = [pool.submit(_preprocess_chunk, method, datasets, c, cache_root, use_cache,
                                   skip_bad) for c in chunks]
            for fut in cf.as_completed(futures):
                for sid, x, err in fut.result():
                    results[sid] = (x, err)
                    bar.update(1)
    bar.close()
    skipped = {sid: err for sid, (x, err) in results.items() if err is not None}
    kept = [s for s in samples if s.id not in skipped]
    if not kept:
        raise DataError("no sample could be preprocessed", "see `merbench data check`")
    arrays = [results[s.id][0] for s in kept]
    shapes = {a.shape for a in arrays}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise DataError(f"method {method.name!r} produced arrays of different shapes: "
                        f"{sorted(shapes)[:3]}", "add a resize step or fix the frame sizes")
    return np.stack(arrays), kept, skipped  # type: ignore[arg-type]


# -- folds ------------------------------------------------------------------------------------
_WORKER_X: dict[str, np.ndarray] = {}


def _worker_init(threads: int, runtime_plugins: Mapping[str, str]) -> None:
    import importlib

    from .plugins import register_plugin

    for name, module in runtime_plugins.items():  # plugins registered at run time, by import
        register_plugin(importlib.import_module(module), name=name)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


def _features(path: str) -> np.ndarray:
    if path not in _WORKER_X:
        _WORKER_X.clear()
        _WORKER_X[path] = np.load(path, mmap_mode="r")
    return _WORKER_X[path]


@dataclass(frozen=True)
class FoldJob:
    fold: Fold
    seed: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    checkpoint: str | None  # published weights to evaluate instead of training
    train_state: str | None = None  # where a deep model keeps its resumable training state


def run_fold(method: Method, job: FoldJob, X: np.ndarray | str, num_classes: int,
             device: str, progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit on the fold's training samples only, predict its test samples -> (proba, info)."""
    from .training import seed_everything

    if isinstance(X, str):
        X = _features(X)
    started = time.time()
    started_at = now()
    seed_everything(job.seed) if "torch" in sys.modules else np.random.seed(job.seed)
    model = method.build_model(num_classes=num_classes, seed=job.seed, device=device,
                               progress=progress, train_state=job.train_state)
    info: dict[str, Any] = {"n_train": int(len(job.train_idx)), "n_test": int(len(job.test_idx))}
    X_test = np.asarray(X[job.test_idx])
    if job.checkpoint is not None:
        if not hasattr(model, "load_weights"):
            raise CheckpointError(f"model {method.model_name!r} cannot load checkpoints")
        model.load_weights(job.checkpoint, model.input_shape(X_test))
        info.update(trained=False, checkpoint=job.checkpoint)
    else:
        model.fit(np.asarray(X[job.train_idx]), job.y[job.train_idx],
                  groups=job.groups[job.train_idx])
        info["trained"] = True
    proba = np.asarray(model.predict_proba(X_test), dtype=np.float64)
    if proba.shape != (len(job.test_idx), num_classes):
        raise ConfigError(f"model {method.model_name!r} returned probabilities of shape "
                          f"{proba.shape}, expected {(len(job.test_idx), num_classes)}")
    if hasattr(model, "init_"):
        info["init"] = model.init_
    if getattr(model, "history_", None):
        info["final_loss"] = model.history_[-1].get("loss")
        info["history"] = list(model.history_)
    if hasattr(model, "fold_artifacts"):  # arrays the driver stores beside the fold
        info["_artifacts"] = {k: np.asarray(v) for k, v in model.fold_artifacts(X_test).items()}
    info["seconds"] = round(time.time() - started, 3)
    info["started"] = started_at
    return proba, info


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    from .plugins import runtime_plugin_modules

    threads = max(1, (os.cpu_count() or 1) // workers)
    return cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_worker_init,
                                  initargs=(threads, runtime_plugin_modules()))


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar on a terminal when asked for, else a no-op with the same methods."""
    if not progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def checkpoint_paths(folds: Sequence[Fold], directory: str | os.PathLike,
                     samples: Mapping[str, Sample]) -> dict[int, str]:
    """The checkpoint of each fold is the file named by its test subject (spelling normalised)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoints folder {directory} does not exist")
    stems = {p.stem: p for p in sorted(directory.iterdir())
             if p.suffix.lower() in (".pth", ".pt", ".pkl", ".bin")}
    subjects: dict[int, tuple[str, str]] = {}
    for fold in folds:
        found = {(samples[i].dataset, samples[i].subject) for i in fold.test}
        if len(found) != 1:
            raise CheckpointError(f"fold {fold.name} has no single test subject",
                                  "--checkpoints needs a leave-one-subject-out protocol")
        subjects[fold.index] = found.pop()
    spelled = {subject for _, subject in subjects.values()}
    out: dict[int, str] = {}
    missing = []
    for index, (dataset, subject) in subjects.items():
        # the file named exactly like the subject, else one whose name normalises to it and is
        # not the exact name of another test subject (s01.pth is SMIC's, not CASME II's sub01)
        match = stems.get(subject)
        if match is None:
            loose = [p for stem, p in stems.items()
                     if stem not in spelled and normalise_subject(dataset, stem) == subject]
            match = loose[0] if len(loose) == 1 else None
        if match is None:
            missing.append(f"{dataset}/{subject}")
        else:
            out[index] = str(match)
    if missing:
        raise CheckpointError(f"no checkpoint for test subject(s) {', '.join(missing[:6])} in "
                              f"{directory}", "add one file per test subject, named by it "
                              "(e.g. sub01.pth, s01.pth, 006.pth)")
    return out


# -- the run ----------------------------------------------------------------------------------
def run(protocol: str | Protocol, method: str | Method, data_roots: Mapping[str, str] | None = None,
        seed: int = 0, seeds: int | None = None, overrides: Mapping[str, Any] | None = None,
        device: str = "auto", workers: int = 1, store: str | os.PathLike | Store | None = None,
        cache_dir: str | None = None, use_cache: bool = True, quiet: bool = True,
        dataset_params: Mapping[str, Mapping[str, Any]] | None = None, inputs: str | None = None,
        checkpoints: str | None = None, skip_bad: bool = False, rerun: bool = False,
        on_fold: Callable[[str, int, int], None] | None = None) -> Any:
    """Run ``method`` under ``protocol``; with ``seeds=N`` run seeds seed..seed+N-1 and return
    a list. Returns a :class:`RunResult` (a stored, finished run is returned as it is unless
    ``rerun``)."""
    if seeds is not None and seeds > 1:
        return [run(protocol, method, data_roots, seed + k, None, overrides, device, workers,
                    store, cache_dir, use_cache, quiet, dataset_params, inputs, checkpoints,
                    skip_bad, rerun, on_fold) for k in range(seeds)]
    proto = load_protocol(protocol) if isinstance(protocol, (str, os.PathLike)) else protocol
    meth = Method.named(method, overrides or {}) if isinstance(method, str) else method
    if overrides and not isinstance(method, str):
        raise ConfigError("pass overrides with a method name, not a Method object")
    progress = not quiet

    datasets: dict[str, Dataset] = {}
    if inputs is not None:
        from . import dataset as open_dataset

        if meth.steps:
            raise ConfigError(f"--inputs holds precomputed arrays, but method {meth.name!r} has "
                              "preprocessing steps", "use a method without steps (e.g. ststnet)")
        folder = open_dataset("folder", root=inputs)
        datasets = {r.name: SubsetDataset(folder, r.name) for r in proto.datasets}
    if not datasets:
        datasets = proto.open_datasets(data_roots, dataset_params)
    samples = proto.load_samples(datasets=datasets)
    folds = proto.folds(samples)
    by_id = {s.id: s for s in samples}
    ckpts = checkpoint_paths(folds, checkpoints, by_id) if checkpoints else {}

    run_versions = versions()
    folds_digest = hashlib.sha256(json.dumps(
        [list(proto.classes)] + [[f.name, f.train, f.test] for f in folds]).encode()).hexdigest()
    key_blob = {"protocol": proto.name, "folds": folds_digest, "method": meth.name,
                "params": meth.params(),
                "seed": seed, "inputs": inputs, "checkpoints": checkpoints, "skip_bad": skip_bad,
                "dataset_params": dataset_params or {}, "roots": dict(data_roots or {}),
                "versions": {k: v for k, v in run_versions.items() if k != "torch"}}
    key = hashlib.sha256(json.dumps(key_blob, sort_keys=True, default=str).encode()).hexdigest()
    st = store if isinstance(store, Store) else Store(store or DEFAULT_STORE)
    previous = st.latest(key)
    if previous is not None and previous.status == "finished" and not rerun:
        log.info("run %s already finished; returning it (rerun=True runs again)", previous.id)
        return result_from_store(st, previous.id, proto)
    if previous is not None and previous.status != "finished" and not rerun:
        run_id = previous.id
        log.info("resuming run %s", run_id)
    else:
        run_id = st.create_run(
            key=key, protocol=proto.label, method=meth.name, params=meth.params(), seed=seed,
            versions=run_versions, git_commit=git_commit(), device=describe_device(device),
            host=platform.node(),
            info={"classes": list(proto.classes), "n_folds": len(folds),
                  "n_samples": len(samples), "leaks_identity": proto.leaks_identity,
                  "protocol_name": proto.name, "protocol_source": proto.source,
                  "trained": not checkpoints, "skip_bad": skip_bad,
                  "checkpoints": checkpoints, "inputs": inputs, "data_roots": dict(data_roots or {}),
                  "dataset_params": dataset_params or {}, "description": meth.description})
    done = st.done_folds(run_id)
    todo = [f for f in folds if f.index not in done]
    st.set_status(run_id, "running")
    try:
        if todo:
            _run_folds(st, run_id, proto, meth, datasets, samples, todo, ckpts, seed, device,
                       workers, cache_dir, use_cache, skip_bad, progress, on_fold)
    except KeyboardInterrupt:
        st.set_status(run_id, "interrupted")
        raise
    except BaseException:
        st.set_status(run_id, "failed")
        raise
    st.set_status(run_id, "finished")
    result = result_from_store(st, run_id, proto)
    result.resumed_folds = len(done)
    return result


def _run_folds(st: Store, run_id: str, proto: Protocol, meth: Method,
               datasets: Mapping[str, Dataset], samples: list[Sample], todo: list[Fold],
               ckpts: Mapping[int, str], seed: int, device: str, workers: int,
               cache_dir: str | None, use_cache: bool, skip_bad: bool, progress: bool,
               on_fold: Callable[[str, int, int], None] | None) -> None:
    needed = {i for f in todo for i in (f.train if f.index not in ckpts else ()) + f.test}
    todo_samples = [s for s in samples if s.id in needed]
    X, kept, skipped = preprocess(meth, datasets, todo_samples, cache_dir, use_cache, workers,
                                  skip_bad, progress)
    if skipped:
        log.warning("skipped %d unusable samples (--skip-bad): %s", len(skipped),
                    ", ".join(list(skipped)[:5]))
        earlier = st.run(run_id).info.get("skipped") or {}
        st.set_status(run_id, "running", {"skipped": {**earlier, **skipped}})
    index = {s.id: k for k, s in enumerate(kept)}
    classes = list(proto.classes)
    y = np.array([classes.index(s.label) for s in kept])
    groups = np.array([s.group for s in kept])
    jobs = []
    for fold in todo:
        tr = np.array([index[i] for i in fold.train if i in index], dtype=np.int64)
        te = np.array([index[i] for i in fold.test if i in index], dtype=np.int64)
        if len(te) == 0:
            raise DataError(f"fold {fold.name}: every test sample was skipped")
        jobs.append(FoldJob(fold, fold_seed(seed, fold.name), tr, te, y, groups,
                            ckpts.get(fold.index),
                            str(Path(st.path).parent / "training-state" / run_id /
                                f"fold{fold.index:03d}.pt")))

    def save(job: FoldJob, proba: np.ndarray, info: dict[str, Any]) -> None:
        started = info.pop("started")
        artifacts = info.pop("_artifacts", None)
        if artifacts:
            info["artifacts"] = str(save_artifacts(
                Path(st.path).parent / "artifacts" / run_id / f"fold{job.fold.index:03d}.npz",
                artifacts, [kept[k].id for k in job.test_idx]))
        preds = [(kept[k].id, kept[k].label, classes[int(np.argmax(p))],
                  {c: round(float(v), 6) for c, v in zip(classes, p)})
                 for k, p in zip(job.test_idx, proba)]
        st.add_fold(run_id, job.fold.index, job.fold.name, job.seed, started, preds, info)
        if job.train_state:  # the fold is stored: its training state is no longer needed
            Path(job.train_state).unlink(missing_ok=True)
        if on_fold is not None:
            on_fold(job.fold.name, job.fold.index, len(jobs))

    bar = progress_bar(len(jobs), "folds", progress)
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            proba, info = run_fold(meth, job, X, len(classes), device, progress and workers <= 1)
            save(job, proba, info)
            bar.update(1)
    else:
        with tempfile.TemporaryDirectory(prefix="merbench-") as tmp:
            path = str(Path(tmp) / "X.npy")
            np.save(path, X, allow_pickle=False)
            with _pool(workers) as pool:
                futures = {pool.submit(run_fold, meth, job, path, len(classes), device, False):
                           job for job in jobs}
                try:
                    for fut in cf.as_completed(futures):
                        proba, info = fut.result()
                        save(futures[fut], proba, info)
                        bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    bar.close()


def save_artifacts(path: Path, arrays: Mapping[str, np.ndarray], sample_ids: Sequence[str]
                   ) -> Path:
    """A fold's model artifacts (``model.fold_artifacts(X_test)``: e.g. test latents) as one
    .npz beside the store, with the fold's test sample ids in ``sample_ids`` (same order)."""
    import io

    from .atomic import write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, sample_ids=np.array(list(sample_ids)), **arrays)
    return write_bytes(path, buf.getvalue())


def stored_report(st: Store, rec: Any) -> tuple[dict[str, Any], list[Prediction]]:
    """The metrics report of a stored run, from its predictions and recorded classes."""
    preds = [Prediction(p.sample_id, p.fold, p.y_true, p.y_pred) for p in st.predictions(rec.id)]
    return report(preds, list(rec.info["classes"])), preds


def result_from_store(st: Store, run_id: str, proto: Protocol) -> RunResult:
    rec = st.run(run_id)
    rep, preds = stored_report(st, rec)
    return RunResult(rec.id, proto, rec.method, rec.seed, rep, preds, info=rec.info,
                     params=rec.params)
