"""A run: its identity and provenance, its preprocessing, its folds on an executor, resume.

Test samples never reach ``fit``: each fold's model is built fresh and fitted on the fold's
training ids only. Finished folds are stored one transaction each (the driver is the only
writer of the store), so running the same command again after an interruption resumes at the
first unfinished fold. Preprocessing lives in :mod:`merbench.preprocess`, fold execution in
:mod:`merbench.executors`, provenance in :mod:`merbench.provenance`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .datasets import Dataset, DatasetView
from .errors import CheckpointError, ConfigError, DataError
from .executors import (Executor, FoldJob, SerialExecutor, TaskFailure, fold_placement,
                        make_executor, map_driver_first, run_fold, shippable)
from .ids import normalise_subject
from .logs import PROGRESS
from .methods import Method
from .metrics import Prediction, report
from .preprocess import count_notes, describe_skipped, preprocess, progress_bar
from .protocols import Protocol, load_protocol
from .provenance import (code_digest, code_fingerprint, describe_device, fold_seed, git_commit,
                         versions)
from .store import DEFAULT_STORE, Store
from .types import Fold, Sample

log = logging.getLogger(__name__)


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
    error: str | None = None  # why the run failed (execute(keep_going=True) only)
    reused: bool = False  # a finished stored run was returned; nothing was computed

    @property
    def uf1(self) -> float:
        return self.report["pooled"].uf1

    @property
    def uar(self) -> float:
        return self.report["pooled"].uar


# -- identity ---------------------------------------------------------------------------------
def run_key(proto: Protocol, folds: Sequence[Fold], meth: Method, seed: int,
            run_versions: Mapping[str, Any], **facts: Any) -> str:
    """The identity of a run: the same key means the same computation, so a finished run with
    it is reused and an unfinished one resumed. Covers the protocol and its folds, the method
    with every parameter, the seed, the versions (torch's aside: a CPU and a CUDA build give
    the same run) and ``facts`` (inputs, checkpoints, data roots and parameters, ...)."""
    folds_digest = hashlib.sha256(json.dumps(
        [list(proto.classes)] + [[f.name, f.train, f.test] for f in folds]).encode()).hexdigest()
    blob = {"protocol": proto.name, "folds": folds_digest, "method": meth.name,
            "params": meth.params(), "seed": seed,
            "versions": {k: v for k, v in run_versions.items() if k != "torch"}, **facts}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


# -- inputs -----------------------------------------------------------------------------------
def open_inputs(inputs: str, proto: Protocol, meth: Method) -> dict[str, Dataset]:
    """The protocol's datasets read from a precomputed-inputs index (``--inputs``), through the
    one registered dataset that reads such indexes."""
    from . import dataset as open_dataset
    from .plugins import entries

    if meth.steps:
        raise ConfigError(f"--inputs holds precomputed arrays, but method {meth.name!r} has "
                          "preprocessing steps", "use a method without steps (e.g. ststnet)")
    readers = [e.name for e in entries("dataset") if e.reads_inputs]
    if len(readers) != 1:
        raise ConfigError(f"--inputs needs exactly one dataset plugin that reads precomputed "
                          f"inputs, found {len(readers)}: {', '.join(readers) or 'none'}",
                          "install or remove plugins so that one remains")
    source = open_dataset(readers[0], root=inputs)
    views = {r.name: DatasetView(source, r.name) for r in proto.datasets}
    empty = [name for name, view in views.items() if not view.samples]
    if empty:
        held = sorted({s.dataset for s in source.samples})
        raise DataError(f"--inputs {inputs}: the index has no rows for dataset {empty[0]!r} of "
                        f"protocol {proto.name} (it holds {', '.join(held) or 'nothing'})",
                        "index the protocol's samples, or choose the protocol of these inputs")
    return views


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
@dataclass
class RunPlan:
    """A run identified and recorded in the store, with the folds it still has to run."""

    store: Store
    run_id: str
    proto: Protocol
    meth: Method
    datasets: dict[str, Dataset]
    samples: list[Sample]
    todo: list[Fold]
    checkpoints: dict[int, str]
    seed: int
    device: str = "auto"
    cache_dir: str | None = None
    use_cache: bool = True
    skip_bad: bool = False
    progress: bool = False
    on_fold: Callable[[str, int, int], None] | None = None
    resumed: int = 0  # folds stored by an earlier, interrupted attempt
    reused: bool = False  # a finished stored run with this identity: nothing to run
    n_folds: int = 0  # folds of the run (after --limit-folds / --subjects)

    def notice(self) -> str | None:
        """The one line a user sees before anything runs: a stored run reused, or resumed."""
        if self.reused:
            rec = self.store.run(self.run_id)
            return (f"reusing stored run {self.run_id} finished {_when(rec.ended)} (same "
                    f"method, parameters, data and code); --rerun to run again")
        if self.resumed:
            return (f"resuming run {self.run_id}: {self.resumed} of {self.n_folds} folds "
                    "already stored")
        return None


def _when(stamp: str | None) -> str:
    """A stored UTC time as local time: HH:MM today, else the date too."""
    from datetime import datetime

    if not stamp:
        return "(time unknown)"
    local = datetime.fromisoformat(stamp).astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")


def select_folds(folds: Sequence[Fold], samples: Sequence[Sample], limit_folds: int | None,
                 subjects: Sequence[str] | None) -> list[Fold]:
    """The folds of a smoke run: those testing on ``subjects`` (as spelled by the database,
    ``dataset/subject`` or a number), then the first ``limit_folds`` of them."""
    from .ids import normalise_subject

    chosen = list(folds)
    if subjects:
        by_id = {s.id: s for s in samples}
        known = sorted({s.group for s in samples})
        wanted: set[str] = set()
        for token in subjects:
            hits = {s.group for s in samples
                    if token in (s.group, s.subject) or
                    normalise_subject(s.dataset, token) == s.subject}
            if not hits:
                raise ConfigError(f"--subjects: no subject {token!r} in this protocol",
                                  f"subjects: {', '.join(known[:12])}"
                                  + (" ..." if len(known) > 12 else ""))
            wanted |= hits
        chosen = [f for f in chosen if any(by_id[i].group in wanted for i in f.test)]
    if limit_folds is not None:
        if isinstance(limit_folds, bool) or not isinstance(limit_folds, int) or limit_folds < 1:
            raise ConfigError(f"--limit-folds must be a positive integer, got {limit_folds!r}")
        chosen = chosen[:limit_folds]
    return chosen


def plan_run(*, protocol: str | Protocol, method: str | Method,
             data_roots: Mapping[str, str] | None = None, seed: int = 0,
             overrides: Mapping[str, Any] | None = None, device: str = "auto",
             store: str | os.PathLike | Store | None = None, cache_dir: str | None = None,
             use_cache: bool = True, quiet: bool = True,
             dataset_params: Mapping[str, Mapping[str, Any]] | None = None,
             inputs: str | None = None, checkpoints: str | None = None, skip_bad: bool = False,
             rerun: bool = False, on_fold: Callable[[str, int, int], None] | None = None,
             limit_folds: int | None = None, subjects: Sequence[str] | None = None
             ) -> RunPlan:
    """Resolve a run: protocol, method, datasets, samples and folds; its identity
    (:func:`run_key`: protocol, folds, method and parameters, seed, versions, the code
    fingerprint, data and limits); the stored run it reuses (finished) or resumes
    (unfinished), else a new record. Nothing is computed yet (:func:`execute` does).

    ``limit_folds`` / ``subjects`` make a smoke run: only the first N folds / the folds
    testing on those subjects, recorded as ``info["partial"]`` (never a complete result)."""
    proto = load_protocol(protocol) if isinstance(protocol, (str, os.PathLike)) else protocol
    if overrides and not isinstance(method, str):
        raise ConfigError("pass overrides with a method name, not a Method object")
    meth = Method.named(method, overrides or {}) if isinstance(method, str) else method

    if inputs is not None and (data_roots or dataset_params):
        raise ConfigError("--data-root and --data-param are not used with --inputs",
                          "the index names every input file; leave them out")
    if inputs is None and not meth.steps:
        _require_inputs(proto, meth)
    datasets = open_inputs(inputs, proto, meth) if inputs is not None else \
        proto.open_datasets(data_roots, dataset_params)
    samples = proto.load_samples(datasets=datasets)
    all_folds = proto.folds(samples)
    folds = select_folds(all_folds, samples, limit_folds, subjects)
    limits = {k: v for k, v in (("limit_folds", limit_folds),
                                ("subjects", sorted(subjects) if subjects else None)) if v}
    partial = len(folds) < len(all_folds)  # which folds: the folds digest of the key
    ckpts = checkpoint_paths(folds, checkpoints, {s.id: s for s in samples}) if checkpoints \
        else {}

    run_versions = {**versions(), "code": code_fingerprint(_code_objects(meth, datasets))}
    key = run_key(proto, folds, meth, seed, run_versions, inputs=inputs, checkpoints=checkpoints,
                  skip_bad=skip_bad, dataset_params=dataset_params or {},
                  roots=dict(data_roots or {}), **({"partial": True} if partial else {}))
    st = store if isinstance(store, Store) else Store(store or DEFAULT_STORE)
    plan = RunPlan(st, "", proto, meth, datasets, samples, [], ckpts, seed, device, cache_dir,
                   use_cache, skip_bad, not quiet, on_fold, n_folds=len(folds))
    previous = st.latest(key)
    if previous is not None and previous.status == "finished" and not rerun:
        damage = st.damage(previous.id)
        if damage:
            raise DataError(f"stored run {previous.id} in {st.path} is damaged: {damage[0]}"
                            + (f" (and {len(damage) - 1} more problems)" if len(damage) > 1
                               else ""), "run the same command with --rerun to run it again")
        plan.run_id, plan.reused = previous.id, True
        log.info("%s", plan.notice())
        return plan
    if previous is not None and previous.status != "finished" and not rerun:
        plan.run_id = previous.id
    else:
        plan.run_id = st.create_run(
            key=key, protocol=proto.label, method=meth.name, params=meth.params(), seed=seed,
            versions=run_versions, git_commit=git_commit(),
            device=describe_device(device if meth.uses_device() else "cpu"),
            host=platform.node(),
            info={"classes": list(proto.classes), "n_folds": len(folds),
                  "n_samples": len(samples), "leaks_identity": proto.leaks_identity,
                  "protocol_name": proto.name, "protocol_source": proto.source,
                  "trained": not checkpoints, "skip_bad": skip_bad,
                  "checkpoints": checkpoints, "inputs": inputs, "data_roots": dict(data_roots or {}),
                  "dataset_params": dataset_params or {}, "description": meth.description,
                  "code": code_digest(run_versions["code"]),
                  **({"partial": True, "limits": limits, "n_folds_protocol": len(all_folds)}
                     if partial else {})})
    done = st.done_folds(plan.run_id)
    plan.resumed = len(done)
    plan.todo = [f for f in folds if f.index not in done]
    if plan.resumed:
        log.info("%s", plan.notice())
    return plan


def _code_objects(meth: Method, datasets: Mapping[str, Dataset]) -> list[Any]:
    """What computes a run: its step and model factories and its dataset classes."""
    from .plugins import entry

    objects = [entry("preprocessor", name).factory for name, _ in meth.steps]
    objects.append(entry("model", meth.model_name).factory)
    for ds in datasets.values():
        objects += [type(ds), type(getattr(ds, "source", ds))]
    return objects


def _require_inputs(proto: Protocol, meth: Method) -> None:
    """A method without steps reads precomputed arrays: it needs ``--inputs`` (a database
    release holds clips, which a model cannot take)."""
    from .plugins import entries

    readers = {e.name for e in entries("dataset") if e.reads_inputs}
    if not {r.name for r in proto.datasets} <= readers:
        raise ConfigError(f"method {meth.name!r} has no preprocessing steps: it reads "
                          "precomputed inputs, not a database release",
                          "pass --inputs INDEX.csv (see README, precomputed inputs), or use a "
                          "method that computes its inputs (merbench list method)")


def run(*, workers: int | str = "auto", executor: Executor | None = None, **kwargs: Any
        ) -> RunResult:
    """Run ``method`` under ``protocol`` and return its :class:`RunResult` (keywords of
    :func:`plan_run`). A stored, finished run with the same identity (:func:`run_key`) is
    returned as it is unless ``rerun``; an unfinished one is resumed. Folds run on
    ``executor`` (default: :func:`~merbench.executors.make_executor` of ``workers``: ``auto``
    runs small deep models' folds on one process per core, the rest in this process)."""
    if executor is not None:
        return execute([plan_run(**kwargs)], executor=executor)[0]
    with make_executor(workers) as ex:  # a bad --workers is refused before anything is stored
        return execute([plan_run(**kwargs)], executor=ex)[0]


def run_seeds(*, seeds: int, seed: int = 0, workers: int | str = "auto",
              executor: Executor | None = None, **kwargs: Any) -> list[RunResult]:
    """Seeds ``seed .. seed + seeds - 1`` of one run (always a list), executed together so the
    workers are busy across seeds."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")
    if executor is not None:
        return execute([plan_run(seed=seed + k, **kwargs) for k in range(seeds)],
                       executor=executor)
    with make_executor(workers) as ex:
        return execute([plan_run(seed=seed + k, **kwargs) for k in range(seeds)], executor=ex)


@dataclass
class _Batch:
    """One plan's preprocessed inputs and fold jobs, while its folds run."""

    plan: RunPlan
    kept: list[Sample]
    jobs: list[FoldJob]
    handle: Any
    state_dir: Path
    left: int
    remote: bool  # its folds run on the executor's workers (else in this process)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`execute`: the unfinished runs are marked interrupted, and
    ``stored`` of ``total`` folds are in the store (running the same command resumes)."""

    def __init__(self, stored: int, total: int) -> None:
        super().__init__(f"{stored} of {total} folds stored")
        self.stored, self.total = stored, total


def execute(plans: Sequence[RunPlan], executor: Executor | None = None,
            workers: int | str = "auto", keep_going: bool = False) -> list[RunResult]:
    """Run the unfinished folds of several planned runs as one stream of tasks on one executor
    (a grid keeps every worker busy across runs). Each fold is stored the moment it finishes
    (the driver is the store's only writer); a run is marked finished with its last fold. On
    an interruption (:class:`RunInterrupted`) or a failure the unfinished runs are marked so,
    and running the same command again resumes them. With ``keep_going`` (a grid) a run whose
    preprocessing or fold fails is marked failed with its error while the other runs go on (its
    finished folds are still stored); its result carries ``error``."""
    own = executor is None
    ex = executor if executor is not None else make_executor(workers)
    active = [p for p in plans if not p.reused]
    batches: list[_Batch] = []
    failed: dict[str, str] = {}  # run id -> error
    try:
        for plan in active:
            stale = {"error": None} if plan.store.run(plan.run_id).info.get("error") else None
            plan.store.set_status(plan.run_id, "running", stale)
        for plan in active:
            if plan.todo:
                try:
                    batches.append(_prepare(plan, ex))
                except Exception as exc:
                    if not keep_going:
                        raise
                    _fail(plan, str(TaskFailure(exc)), failed)
        tasks: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
        owners: dict[bool, list[tuple[_Batch, FoldJob]]] = {True: [], False: []}
        for batch in batches:
            classes = len(batch.plan.proto.classes)
            for job in batch.jobs:
                tasks[batch.remote].append((batch.handle, batch.plan.meth, job, classes,
                                            batch.plan.device,
                                            batch.plan.progress and not batch.remote))
                owners[batch.remote].append((batch, job))
        # the workers' folds (auto: in the driver until the workers would save more than
        # their start, see map_driver_first), then the driver's own (cheap or big models)
        streams = []
        if tasks[True]:
            streams.append((True, map_driver_first(ex, run_fold_labelled, tasks[True],
                                                   errors=keep_going) if ex.auto
                            else ex.map(run_fold_labelled, tasks[True], errors=keep_going)))
        if tasks[False]:
            streams.append((False, SerialExecutor().map(run_fold_labelled, tasks[False],
                                                        errors=keep_going)))
        parallel = ex.workers if tasks[True] else 1
        bar = progress_bar(sum(map(len, tasks.values())), "folds",
                           any(p.progress for p in active))
        eta_format = getattr(bar, "bar_format", None)
        if not bar.disable:
            bar.smoothing = 0  # folds take similar times: the mean rate since the start
            if parallel > 1:  # until every worker has finished a fold, the rate is too low
                bar.bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]"
        try:
            for where, i, out in _in_turn(streams):
                batch, job = owners[where][i]
                if isinstance(out, TaskFailure):
                    _fail(batch.plan, f"fold {job.fold.name}: {out}", failed)
                else:
                    _store_fold(batch, job, *out)
                bar.update(1)
                if not bar.disable and bar.n >= parallel:
                    bar.bar_format = eta_format
                batch.left -= 1
                if batch.left == 0:
                    _finish(batch, ex, batch.plan.run_id not in failed)
        finally:
            bar.close()
        for plan in active:  # runs whose folds were all stored before (a resumed, done run)
            if plan.run_id not in failed:
                plan.store.set_status(plan.run_id, "finished")
    except KeyboardInterrupt:
        _mark_unfinished(active, "interrupted")
        _tidy_state(batches)
        stored = sum(len(p.store.done_folds(p.run_id)) for p in plans)
        raise RunInterrupted(stored, sum(p.n_folds for p in plans)) from None
    except BaseException:
        _mark_unfinished(active, "failed")
        _tidy_state(batches)
        raise
    finally:
        if own:
            ex.close()
    results = []
    for plan in plans:
        if plan.run_id in failed:
            rec = plan.store.run(plan.run_id)
            result = RunResult(rec.id, plan.proto, rec.method, rec.seed, {}, [], info=rec.info,
                               params=rec.params, error=failed[plan.run_id])
        else:
            result = result_from_store(plan.store, plan.run_id, plan.proto)
        result.resumed_folds = plan.resumed
        result.reused = plan.reused
        results.append(result)
    return results


def _in_turn(streams: Sequence[tuple[bool, Iterator[tuple[int, Any]]]]
             ) -> Iterator[tuple[bool, int, Any]]:
    """The results of each stream in turn: (stream key, task index, result)."""
    for key, stream in streams:
        for i, result in stream:
            yield key, i, result


def _fail(plan: RunPlan, error: str, failed: dict[str, str]) -> None:
    """Mark one run of a keep-going execution failed (its first error is kept)."""
    if plan.run_id not in failed:
        log.error("run %s (%s, seed %d) failed: %s", plan.run_id, plan.meth.name, plan.seed,
                  error)
        failed[plan.run_id] = error
        plan.store.set_status(plan.run_id, "failed", {"error": error})


def run_fold_labelled(X: np.ndarray, method: Method, job: FoldJob, *rest: Any
                      ) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`merbench.executors.run_fold`, its progress lines (epochs) naming the fold."""
    from .logs import progress_context

    with progress_context(f"fold {job.fold.name}"):
        return run_fold(X, method, job, *rest)


def _mark_unfinished(plans: Sequence[RunPlan], status: str) -> None:
    for plan in plans:  # set_status never demotes a finished run
        plan.store.set_status(plan.run_id, status)


def _tidy_state(batches: Sequence["_Batch"]) -> None:
    """Remove training-state folders left empty (models without training state, or every
    fold stored); a folder with a fold's state stays for the resume."""
    for batch in batches:
        for folder in (batch.state_dir, batch.state_dir.parent):
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                pass


def _prepare(plan: RunPlan, executor: Executor) -> _Batch:
    """Preprocess what the plan's unfinished folds need and build their jobs."""
    needed = {i for f in plan.todo
              for i in (f.train if f.index not in plan.checkpoints else ()) + f.test}
    pre = preprocess(plan.meth, plan.datasets, [s for s in plan.samples if s.id in needed],
                     cache_root=plan.cache_dir, use_cache=plan.use_cache, executor=executor,
                     skip_bad=plan.skip_bad, progress=plan.progress)
    _record_data_facts(plan.store, plan.run_id, pre.skipped, pre.notes)
    index = {s.id: k for k, s in enumerate(pre.kept)}
    classes = list(plan.proto.classes)
    y = np.array([classes.index(s.label) for s in pre.kept])
    groups = np.array([s.group for s in pre.kept])
    state_dir = Path(plan.store.path).parent / "training-state" / plan.run_id
    remote, threads = fold_placement(plan.meth.parallel_folds(), plan.meth.uses_device(),
                                     executor, shippable(plan.meth, plan.datasets))
    jobs = []
    for fold in plan.todo:
        tr = np.array([index[i] for i in fold.train if i in index], dtype=np.int64)
        te = np.array([index[i] for i in fold.test if i in index], dtype=np.int64)
        if len(te) == 0:
            raise DataError(f"fold {fold.name}: every test sample was skipped")
        jobs.append(FoldJob(fold, fold_seed(plan.seed, fold.name), tr, te, y, groups,
                            plan.checkpoints.get(fold.index),
                            str(state_dir / f"fold{fold.index:03d}.pt"), threads))
    handle = executor.share(pre.X) if remote else pre.X
    return _Batch(plan, pre.kept, jobs, handle, state_dir, len(jobs), remote)


def _store_fold(batch: _Batch, job: FoldJob, proba: np.ndarray, info: dict[str, Any]) -> None:
    plan, kept = batch.plan, batch.kept
    classes = list(plan.proto.classes)
    started = info.pop("started")
    artifacts = info.pop("_artifacts", None)
    if artifacts:
        info["artifacts"] = str(save_artifacts(
            Path(plan.store.path).parent / "artifacts" / plan.run_id /
            f"fold{job.fold.index:03d}.npz", artifacts, [kept[k].id for k in job.test_idx]))
    preds = [(kept[k].id, kept[k].label, classes[int(np.argmax(p))],
              {c: round(float(v), 6) for c, v in zip(classes, p)})
             for k, p in zip(job.test_idx, proba)]
    plan.store.add_fold(plan.run_id, job.fold.index, job.fold.name, job.seed, started, preds,
                        info)
    if job.train_state:  # the fold is stored: its training state is no longer needed
        Path(job.train_state).unlink(missing_ok=True)
    _report_fold(plan, job, info)
    if plan.on_fold is not None:
        plan.on_fold(job.fold.name, job.fold.index, len(batch.jobs))


def _report_fold(plan: RunPlan, job: FoldJob, info: Mapping[str, Any]) -> None:
    """One progress line per stored fold: which, how many test samples, how long, and the
    run's pooled UF1 so far."""
    if not PROGRESS.isEnabledFor(logging.INFO):
        return
    from .metrics import score

    preds = plan.store.predictions(plan.run_id)
    uf1 = score([p.y_true for p in preds], [p.y_pred for p in preds], plan.proto.classes).uf1
    done = len({p.fold_index for p in preds})
    PROGRESS.info("%s seed %d: fold %d/%d %s stored (%d test samples, %.1f s); running UF1 %s",
                  plan.meth.name, plan.seed, done, plan.n_folds, job.fold.name,
                  info.get("n_test", len(job.test_idx)), info.get("seconds", 0.0),
                  "undefined" if uf1 != uf1 else f"{uf1:.4f}")


def _finish(batch: _Batch, executor: Executor, ok: bool = True) -> None:
    if ok:
        batch.plan.store.set_status(batch.plan.run_id, "finished")
    if batch.remote:
        executor.release(batch.handle)
    _tidy_state([batch])


def _record_data_facts(st: Store, run_id: str, skipped: Mapping[str, str],
                       notes: Mapping[str, Sequence[str]]) -> None:
    """Data-quality facts on the run record (merged with a resumed run's earlier ones):
    samples skipped with their reasons, and the notes steps left (fallbacks) with counts."""
    if not skipped and not notes:
        return
    info = st.run(run_id).info
    if skipped:
        log.warning("run %s skipped %d unusable sample(s) (--skip-bad): %s (all are in the run "
                    "record)", run_id, len(skipped), describe_skipped(skipped))
    all_notes = {**(info.get("notes") or {}), **{k: list(v) for k, v in notes.items()}}
    st.set_status(run_id, "running", {"skipped": {**(info.get("skipped") or {}), **skipped},
                                      "notes": all_notes, "fallbacks": count_notes(all_notes)})


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
