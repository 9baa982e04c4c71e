"""Run-level explanations: a stored run's per-fold model artifacts, drawn by its model plugin.

The runner saves what a model's ``fold_artifacts(X_test)`` returns (e.g. test latents) beside
the store, one ``.npz`` per fold with the fold's test sample ids. Here the core only collects
them, checks that each fold's ids are exactly the ids it predicted (so a figure can only show
the run's own test samples, never training data or another run's files) and hands them to the
model class's ``explain_run(folds, labels, out_dir)`` classmethod, which draws. The core names
no model: a model without that classmethod is refused in one line.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .store import DEFAULT_STORE, RunRecord, Store


@dataclass(frozen=True)
class FoldArtifacts:
    """One fold's stored arrays (``sample_ids`` taken out) with its test predictions, aligned
    with ``sample_ids``."""

    index: int
    name: str
    sample_ids: list[str]
    y_true: list[str]
    y_pred: list[str]
    arrays: dict[str, np.ndarray] = field(repr=False)


def _locate(st: Store, run_id: str, recorded: str) -> Path:
    """The artifacts file: as recorded, else under this store's folder (the recorded path is
    relative to where the run was started)."""
    path = Path(recorded)
    if path.is_file():
        return path
    moved = st.path.parent / "artifacts" / run_id / path.name
    if moved.is_file():
        return moved
    raise DataError(f"run {run_id}: artifacts file {recorded} is missing",
                    "run explain-run beside the store's artifacts/ folder, or rerun the run "
                    "with --rerun")


def load_fold_artifacts(st: Store, rec: RunRecord) -> list[FoldArtifacts]:
    """Every fold's artifacts of run ``rec``, checked against its stored test predictions."""
    infos = st.fold_info(rec.id)
    names = st.done_folds(rec.id)
    preds: dict[int, dict[str, Any]] = defaultdict(dict)
    for p in st.predictions(rec.id):
        preds[p.fold_index][p.sample_id] = p
    out = []
    for index in sorted(infos):
        recorded = infos[index].get("artifacts")
        if not recorded:
            continue
        path = _locate(st, rec.id, recorded)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        ids = [str(s) for s in arrays.pop("sample_ids", np.array([]))]
        fold = preds[index]
        if len(set(ids)) != len(ids) or set(ids) != set(fold):
            raise DataError(f"run {rec.id} fold {names[index]}: {path} holds other samples than "
                            f"the fold's {len(fold)} test predictions",
                            "the file is stale or foreign; rerun the run with --rerun")
        out.append(FoldArtifacts(index, names[index], ids, [fold[i].y_true for i in ids],
                                 [fold[i].y_pred for i in ids], arrays))
    if not out:
        raise DataError(f"run {rec.id} ({rec.method}) stored no model artifacts",
                        "its model keeps none (no fold_artifacts), or the run predates them: "
                        "rerun it with --rerun")
    return out


def explain_run(run_id: str, store: str | os.PathLike | None = None,
                out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write a stored run's run-level explanations (default folder ``explanations/RUN_ID``)
    and return the paths; the run's model plugin draws them."""
    from .methods import Method
    from .plugins import entry

    path = Path(store) if store else DEFAULT_STORE
    if not path.exists():
        raise DataError(f"results store {path} does not exist", "check the --store path")
    st = Store(path)
    rec = st.run(run_id)
    model_name = Method.named(rec.method, {}).model_name
    draw = getattr(entry("model", model_name).factory, "explain_run", None)
    if draw is None:
        raise ConfigError(f"model {model_name!r} of run {rec.id} ({rec.method}) draws no "
                          "run-level explanations", "use `merbench explain` on a checkpoint "
                          "for its per-input explanations")
    folds = load_fold_artifacts(st, rec)
    out = Path(out_dir) if out_dir else Path("explanations") / rec.id
    out.mkdir(parents=True, exist_ok=True)
    return [Path(p) for p in draw(folds, list(rec.info["classes"]), out)]
