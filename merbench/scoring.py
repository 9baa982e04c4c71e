"""Scoring predictions made elsewhere (``merbench score``): CSV files and MEGC2019 logs.

Predictions are joined to the protocol's ground truth by sample id, never by position; name
spellings are normalised as each dataset plugin declares them (SAMM ``6`` vs ``006``, SMIC
``s1_ne_01`` vs ``s01_ne_01``, ``CASMEII`` for ``casme2``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import PredictionsError
from .ids import canonical_dataset, dataset_names, normalise_id
from .metrics import Prediction, report
from .protocols import Protocol
from .textio import csv_rows, read_text

@dataclass(frozen=True)
class Row:
    sample_id: str
    fold: str
    pred: str
    gt: str | None
    line: int


def _label(value: str, classes: Sequence[str], where: str) -> str:
    value = value.strip()
    if value.lstrip("-").isdigit():
        k = int(value)
        if not 0 <= k < len(classes):
            raise PredictionsError(f"{where}: class index {k} is outside 0..{len(classes) - 1} "
                                   f"({', '.join(classes)})")
        return classes[k]
    low = {c.lower(): c for c in classes}
    if value.lower() not in low:
        raise PredictionsError(f"{where}: label {value!r} is not one of {list(classes)}",
                               "use the protocol's class names or their 0-based indices")
    return low[value.lower()]


def read_megc_log(text: str, classes: Sequence[str], path: str,
                  datasets: Sequence[str] = ()) -> list[Row]:
    """The official MEGC2019 format: '<dataset> <subject>' opens a fold, then '<clip> <gt> <pred>'.

    A two-field line is a fold header only when its first field names a known dataset, so a
    sample line missing a field is an error with its line number, not a new fold."""
    known = set(dataset_names().values()) | {d.lower() for d in datasets}
    rows: list[Row] = []
    dataset = subject = None
    for n, raw in enumerate(text.splitlines(), 1):
        parts = raw.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) == 2 and canonical_dataset(parts[0]) in known:
            dataset, subject = canonical_dataset(parts[0]), parts[1]
            continue
        if len(parts) != 3 or dataset is None:
            raise PredictionsError(f"{path} line {n}: expected '<dataset> <subject>' or "
                                   f"'<clip> <gt> <pred>', got {raw.strip()!r}")
        sid = normalise_id(dataset, subject, parts[0])
        where = f"{path} line {n}"
        rows.append(Row(sid, sid.rsplit("/", 1)[0], _label(parts[2], classes, where),
                        _label(parts[1], classes, where), n))
    return rows


def read_csv(text: str, classes: Sequence[str], path: str) -> list[Row]:
    """A CSV with a header: ``id`` (or dataset, subject, clip), ``pred``, optional ``gt``/``fold``
    (quoted or not; fields of any length)."""
    lines = csv_rows(text, path, PredictionsError)
    header = next(lines, [])
    reader = ((n, {h: (row[k] if k < len(row) else None) for k, h in enumerate(header)})
              for n, row in enumerate(lines, 2) if any(c.strip() for c in row))
    cols = {c.strip().lower(): c for c in header}
    if "pred" not in cols or not ("id" in cols or {"dataset", "subject", "clip"} <= set(cols)):
        raise PredictionsError(f"{path}: a predictions CSV needs a header with 'pred' and either "
                               "'id' or 'dataset,subject,clip' (optional: 'gt', 'fold')",
                               "or use the MEGC2019 log format")
    rows = []
    for n, rec in reader:
        get = lambda k: (rec.get(cols[k]) or "").strip() if k in cols else ""  # noqa: E731
        if "id" in cols and get("id"):
            parts = get("id").split("/")
            if len(parts) != 3:
                raise PredictionsError(f"{path} line {n}: id {get('id')!r} is not "
                                       "dataset/subject/clip")
            sid = normalise_id(canonical_dataset(parts[0]), parts[1], parts[2])
        else:
            sid = normalise_id(canonical_dataset(get("dataset")), get("subject"), get("clip"))
        where = f"{path} line {n}"
        gt = _label(get("gt"), classes, where) if get("gt") else None
        rows.append(Row(sid, get("fold") or sid.rsplit("/", 1)[0],
                        _label(get("pred"), classes, where), gt, n))
    return rows


def read_predictions(path: str | Path, classes: Sequence[str],
                     datasets: Sequence[str] = ()) -> list[Row]:
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"predictions file {path} does not exist")
    text = read_text(path, "predictions file", PredictionsError)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    header = [c.strip().lower() for c in next(csv_rows(first, str(path), PredictionsError), [""])]
    is_csv = "," in first and bool({"pred", "id", "dataset", "subject", "clip", "gt"} & set(header))
    looks_like_log = header[0] in dataset_names() or (len(header) == 3 and header[1].isdigit())
    if not is_csv and "," in first and not looks_like_log:
        raise PredictionsError(f"{path}: looks like a CSV, but its header {first.strip()!r} has "
                               "no known column", "name the columns id (or dataset, subject, "
                               "clip), pred and optionally gt / fold")
    rows = read_csv(text, classes, str(path)) if is_csv else \
        read_megc_log(text, classes, str(path), datasets)
    if not rows:
        raise PredictionsError(f"{path}: no predictions found")
    seen: dict[str, int] = {}
    for r in rows:
        if r.sample_id in seen:
            raise PredictionsError(f"{path}: sample {r.sample_id} is predicted twice (lines "
                                   f"{seen[r.sample_id]} and {r.line})")
        seen[r.sample_id] = r.line
    return rows


def score_file(path: str | Path, proto: Protocol, partial: bool = False,
               ground_truth: dict[str, str] | None = None, truth_from: str = "protocol"
               ) -> dict[str, Any]:
    """Score a predictions file under a protocol; returns the metrics report plus coverage.

    ``truth_from="protocol"`` (the default) scores against the protocol's official labels
    (its sample list, or ``ground_truth`` read from the datasets): a file can never supply its
    own answers, and a gt column that disagrees with them is an error. ``truth_from="file"``
    scores against the file's gt where it gives one (as the file's authors did), listing every
    disagreement with the official labels in ``gt_disagreements``.
    """
    if truth_from not in ("file", "protocol"):
        raise PredictionsError(f"truth_from must be 'file' or 'protocol', not {truth_from!r}")
    classes = list(proto.classes)
    rows = read_predictions(path, classes, [d.name for d in proto.datasets])
    truth = ground_truth if ground_truth is not None else proto.ground_truth()
    if truth is None and truth_from == "protocol":
        raise PredictionsError(f"protocol {proto.name} has no official sample list, so no labels "
                               f"to score {path} against", "pass --data-root NAME=DIR to read "
                               "them from the datasets, or --truth file to trust the file's gt "
                               "column")
    if truth is None:
        missing_gt = [r.sample_id for r in rows if r.gt is None]
        if missing_gt:
            raise PredictionsError(f"protocol {proto.name} has no official sample list and "
                                   f"{path} gives no gt for {missing_gt[0]}",
                                   "add a 'gt' column, or pass --data-root so merbench reads "
                                   "the ground truth from the dataset")
        truth = {r.sample_id: r.gt for r in rows}  # type: ignore[misc]
    unknown = [r.sample_id for r in rows if r.sample_id not in truth]
    if unknown:
        raise PredictionsError(f"{path}: {len(unknown)} sample(s) not in protocol {proto.name}: "
                               f"{', '.join(unknown[:5])}", "check the sample names")
    predicted = {r.sample_id for r in rows}
    missing = [sid for sid in truth if sid not in predicted]
    if missing and not partial:
        raise PredictionsError(f"{path}: {len(missing)} of the protocol's {len(truth)} samples "
                               f"have no prediction: {', '.join(missing[:5])}"
                               + (" ..." if len(missing) > 5 else ""),
                               "pass --partial to score the covered samples only")
    disagree = [r for r in rows if r.gt is not None and r.gt != truth[r.sample_id]]
    if disagree and truth_from == "protocol":
        first = disagree[0]
        raise PredictionsError(f"{path}: its gt column disagrees with protocol {proto.name}'s "
                               f"labels for {len(disagree)} sample(s), e.g. {first.sample_id} "
                               f"(line {first.line}): gt {first.gt!r}, protocol "
                               f"{truth[first.sample_id]!r}", "fix the gt column, or pass "
                               "--truth file to score against it; disagreements are listed")
    preds = [Prediction(r.sample_id, r.fold,
                        r.gt if truth_from == "file" and r.gt is not None else truth[r.sample_id],
                        r.pred) for r in rows]
    rep = report(preds, classes)
    rep["coverage"] = {"scored": len(preds), "total": len(truth), "missing": missing}
    rep["gt_disagreements"] = [{"sample": r.sample_id, "file": r.gt, "protocol": truth[r.sample_id]}
                               for r in disagree]
    rep["truth_from"] = truth_from
    return rep
