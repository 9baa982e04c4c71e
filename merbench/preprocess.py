"""Preprocessing for a run: every sample through the method's steps, cached on disk.

Runs on an executor (chunks of samples as tasks) and returns the stacked arrays, the samples
kept, the samples skipped with ``--skip-bad`` (id -> reason) and the notes steps left on the
way (fallbacks such as a centre crop or an estimated apex), which the run records.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .cache import Cache
from .errors import DataError, MerbenchError
from .methods import Method
from .types import Sample

if TYPE_CHECKING:
    from .datasets import Dataset
    from .executors import Executor


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar on a terminal when asked for; a disabled one (same methods) otherwise."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False,
                disable=not progress or not sys.stderr.isatty())


def cache_parts(sample: Sample, chain: Any, files: Any = ()) -> list[Any]:
    """Everything that determines a sample's preprocessed array: the sample's facts, the step
    chain, and ``files``, a fingerprint of the files its frames are read from (a frame
    overwritten or restored is a new key, so a stale array is never served)."""
    meta = [(k, v) for k, v in sample.meta if k not in ("native_label", "dataset_label")]
    return [sample.id, sample.path, sample.onset, sample.apex, sample.offset, meta, chain,
            files]


#: CPU seconds (of its own thread) of preprocessing the driver does before an ``auto``
#: executor starts its workers for the rest: a warm cache or cheap steps never pay for a
#: worker pool (its start costs about a second of CPU per worker, more with dlib's landmark
#: model to load). CPU time, not wall time: other load on the machine must not make cheap
#: work look expensive.
DRIVER_SECONDS = 2.0


def preprocess_chunk(method: Method, datasets: Mapping[str, "Dataset"],
                     samples: Sequence[Sample], cache_root: str | None, use_cache: bool,
                     skip_bad: bool, deadline: float | None = None
                     ) -> list[tuple[str, np.ndarray | None, str | None, list[str]]]:
    """(id, array or None, error or None, notes) per sample; an executor task. With a
    ``deadline`` (``time.thread_time()``), it stops after the sample that passes it."""
    # precomputed inputs are only loaded: caching a copy would just hide later edits of the files
    cache = Cache(cache_root, enabled=use_cache and bool(method.steps))
    steps = method.build_steps()
    chain = method.step_chain_key()
    out: list[tuple[str, np.ndarray | None, str | None, list[str]]] = []
    for s in samples:
        ds = datasets[s.dataset]
        try:
            x, notes = cache.get_or_compute_noted(
                cache_parts(s, chain, ds.fingerprint(s) if cache.enabled else ()),
                lambda: method.run_steps(ds.load(s), steps),
                info={"sample": s.id, "method": method.name})
            out.append((s.id, x, None, notes))
        except MerbenchError as exc:
            if not skip_bad:
                raise
            out.append((s.id, None, str(exc), []))
        if deadline is not None and time.thread_time() > deadline:
            break
    return out


@dataclass
class Preprocessed:
    X: np.ndarray
    kept: list[Sample]
    skipped: dict[str, str] = field(default_factory=dict)  # sample id -> reason
    notes: dict[str, list[str]] = field(default_factory=dict)  # sample id -> notes (if any)


def describe_skipped(skipped: Mapping[str, str], shown: int = 3) -> str:
    """The first few skipped samples with their reasons, on one line."""
    head = "; ".join(reason if reason.startswith(sid) else f"{sid}: {reason}"
                     for sid, reason in list(skipped.items())[:shown])
    more = len(skipped) - shown
    return head + (f"; and {more} more" if more > 0 else "")


def note_kind(note: str) -> str:
    """A note without its sample-specific numbers, to count fallbacks of one kind."""
    return re.sub(r"\d+", "N", note)


def count_notes(notes: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """How many samples carry each kind of note."""
    return dict(Counter(k for ns in notes.values() for k in {note_kind(n) for n in ns}))


def preprocess(method: Method, datasets: Mapping[str, "Dataset"], samples: Sequence[Sample], *,
               cache_root: str | None = None, use_cache: bool = True,
               executor: "Executor | None" = None, skip_bad: bool = False,
               progress: bool = False) -> Preprocessed:
    """Arrays for every sample (cached), on ``executor`` (serial by default)."""
    from .executors import SerialExecutor

    samples = list(samples)
    if use_cache and method.steps:
        Cache(cache_root).remove_leftovers()  # temporary files of writes a kill interrupted
    executor = executor or SerialExecutor()
    results: dict[str, tuple[np.ndarray | None, str | None, list[str]]] = {}
    bar = progress_bar(len(samples), "preprocess", progress)

    def collect(chunk: list[tuple[str, np.ndarray | None, str | None, list[str]]]) -> None:
        for sid, x, err, notes in chunk:
            results[sid] = (x, err, notes)
        bar.update(len(chunk))

    if executor.auto:
        from .executors import shippable

        if not shippable(method, datasets):
            executor = SerialExecutor()
    try:
        todo = samples
        # in the driver while that is quick enough (unless the workers already run)
        if (executor.auto and not executor.started) or len(samples) < 8:
            deadline = time.thread_time() + DRIVER_SECONDS if executor.workers > 1 else None
            collect(preprocess_chunk(method, datasets, todo, cache_root, use_cache, skip_bad,
                                     deadline))
            todo = [s for s in todo if s.id not in results]
        if len(todo) < 8:  # not worth shipping to workers
            executor = SerialExecutor()
        n_chunks = max(executor.workers, 1) * 4
        chunks = [c for c in (todo[i::n_chunks] for i in range(n_chunks)) if c]
        tasks = [(method, datasets, c, cache_root, use_cache, skip_bad) for c in chunks]
        for _, chunk in executor.map(preprocess_chunk, tasks):
            collect(chunk)
    finally:
        bar.close()
    skipped = {sid: err for sid, (_, err, _) in results.items() if err is not None}
    kept = [s for s in samples if s.id not in skipped]
    if not kept:
        raise DataError(f"no sample could be preprocessed: all {len(samples)} failed, e.g. "
                        f"{next(iter(skipped.values()))}", "see `merbench data check`")
    arrays = [results[s.id][0] for s in kept]
    shapes = {a.shape for a in arrays}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise DataError(f"method {method.name!r} produced arrays of different shapes: "
                        f"{sorted(shapes)[:3]}", "add a resize step or fix the frame sizes")
    notes = {s.id: results[s.id][2] for s in kept if results[s.id][2]}
    return Preprocessed(np.stack(arrays), kept, skipped, notes)  # type: ignore[arg-type]
