"""Protocols as data: TOML files in protocols/ -> sample sets, label spaces and folds.

Kinds: ``loso`` (leave one subject out, over one dataset or a composite), ``cross-dataset``
(train on all of A, test on B), ``leave-one-dataset-out``, ``holdout`` (a seeded
subject-disjoint split, or the sample-level split some papers use, flagged as leaking
identity). Folds are deterministic: they depend on the protocol file and the samples only.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import os
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DataError, ProtocolError, UnknownNameError
from .ids import normalise_id
from .types import Fold, Sample

KINDS = ("loso", "cross-dataset", "leave-one-dataset-out", "holdout")


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def protocol_dirs() -> list[Path]:
    """Built-in protocols, then any folders listed in MERBENCH_PROTOCOL_PATH (os.pathsep)."""
    dirs = [Path(str(importlib.resources.files("merbench_protocols")))]
    extra = os.environ.get("MERBENCH_PROTOCOL_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def protocol_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in protocol_dirs():
        for path in sorted(d.glob("*.toml")):
            found[path.stem] = path
    return found


def protocol_names() -> list[str]:
    return sorted(protocol_files())


@dataclass(frozen=True)
class DatasetRef:
    name: str
    labels: str = "native"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str
    classes: tuple[str, ...]
    datasets: tuple[DatasetRef, ...]
    description: str = ""
    sample_list: tuple[tuple[str, str], ...] | None = None  # (sample id, label)
    train: str | None = None  # cross-dataset
    test: str | None = None
    split: str = "subject"  # holdout: subject | sample
    test_fraction: float = 0.3
    split_seed: int = 0
    source: str = ""

    @property
    def leaks_identity(self) -> bool:
        """True for sample-level splits: a test subject's other clips are in training."""
        return self.kind == "holdout" and self.split == "sample"

    @property
    def label(self) -> str:
        """The name as shown in every output (sample-level holdouts say so)."""
        return f"{self.name} [leaks identity]" if self.leaks_identity else self.name

    @property
    def composite(self) -> bool:
        return len(self.datasets) > 1

    def ground_truth(self) -> dict[str, str] | None:
        return dict(self.sample_list) if self.sample_list is not None else None

    # -- samples ----------------------------------------------------------------------------
    def open_datasets(self, data_roots: Mapping[str, str] | None = None,
                      dataset_params: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> dict[str, Any]:
        """Open each of the protocol's datasets (its root from ``data_roots``, its parameters
        from the protocol file, then ``dataset_params``)."""
        from . import dataset as open_dataset

        missing = [r.name for r in self.datasets
                   if (data_roots or {}).get(r.name) is None and _needs_root(r.name)]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise DataError(f"protocol {self.name} needs dataset{'s' * (len(missing) > 1)} "
                            f"{names} but no data root was given",
                            "pass " + " ".join(f"--data-root {m}=/path/to/{m}" for m in missing))
        out = {}
        for ref in self.datasets:
            params = {**ref.params, **(dataset_params or {}).get(ref.name, {})}
            root = (data_roots or {}).get(ref.name)
            out[ref.name] = open_dataset(ref.name, root=root, **params) if root is not None \
                else open_dataset(ref.name, **params)
        return out

    def load_samples(self, data_roots: Mapping[str, str] | None = None,
                     dataset_params: Mapping[str, Mapping[str, Any]] | None = None,
                     datasets: Mapping[str, Any] | None = None) -> list[Sample]:
        """The protocol's samples, relabelled into its classes (list order is deterministic).

        ``datasets`` may hand in opened Dataset objects (e.g. precomputed ``--inputs``).
        """
        opened = dict(datasets or {})
        missing = [r for r in self.datasets if r.name not in opened]
        if missing:
            opened.update(Protocol.open_datasets(
                dataclasses.replace(self, datasets=tuple(missing)), data_roots, dataset_params))
        samples: list[Sample] = []
        for ref in self.datasets:
            samples.extend(opened[ref.name].labelled(ref.labels))
        return self.select(samples)

    def select(self, samples: Sequence[Sample]) -> list[Sample]:
        """Restrict to the official list (when there is one) and check labels."""
        if self.sample_list is not None:
            by_id = {s.id: s for s in samples}
            missing = [sid for sid, _ in self.sample_list if sid not in by_id]
            if missing:
                raise DataError(f"protocol {self.name}: {len(missing)} listed sample(s) are not "
                                f"in the data: {', '.join(missing[:5])}",
                                "check the data roots or the dataset installation "
                                "(`merbench data check`)")
            out = []
            for sid, label in self.sample_list:
                s = by_id[sid]
                out.append(s if s.label == label else s.replace(
                    label=label, meta=s.meta + (("dataset_label", s.label),)))
            samples = out
        bad = [s for s in samples if s.label not in self.classes]
        if bad:
            raise ProtocolError(f"{bad[0].id}: label {bad[0].label!r} is not one of protocol "
                                f"{self.name}'s classes {list(self.classes)}",
                                "check the protocol's label space")
        return list(samples)

    # -- folds ------------------------------------------------------------------------------
    def folds(self, samples: Sequence[Sample]) -> list[Fold]:
        order = [r.name for r in self.datasets]
        ids = [s.id for s in samples]
        if self.kind == "loso":
            groups: dict[str, list[str]] = {}
            for s in samples:
                groups.setdefault(s.group, []).append(s.id)
            keys = sorted(groups, key=lambda g: (order.index(g.split("/")[0])
                                                 if g.split("/")[0] in order else len(order),
                                                 _natural(g)))
            folds = [Fold(i, g, tuple(x for x in ids if x not in set(groups[g])),
                          tuple(groups[g])) for i, g in enumerate(keys)]
        elif self.kind == "cross-dataset":
            folds = [Fold(0, f"{self.train}->{self.test}",
                          tuple(s.id for s in samples if s.dataset == self.train),
                          tuple(s.id for s in samples if s.dataset == self.test))]
        elif self.kind == "leave-one-dataset-out":
            folds = [Fold(i, d, tuple(s.id for s in samples if s.dataset != d),
                          tuple(s.id for s in samples if s.dataset == d))
                     for i, d in enumerate(order)]
        elif self.kind == "holdout":
            folds = [self._holdout(samples)]
        else:  # pragma: no cover - checked on load
            raise ProtocolError(f"unknown protocol kind {self.kind!r}")
        self._check_folds(samples, folds)
        return folds

    def _holdout(self, samples: Sequence[Sample]) -> Fold:
        rng = np.random.default_rng(self.split_seed)
        if self.split == "subject":
            groups = sorted({s.group for s in samples}, key=_natural)
            n_test = min(len(groups) - 1, max(1, round(self.test_fraction * len(groups))))
            test_groups = set(rng.permutation(groups)[:n_test].tolist())
            test = {s.id for s in samples if s.group in test_groups}
            name = "holdout-subjects"
        else:  # stratified by class, identity leaks
            test = set()
            for label in self.classes:
                members = sorted((s.id for s in samples if s.label == label), key=_natural)
                k = round(self.test_fraction * len(members))
                test.update(rng.permutation(members)[:k].tolist())
            name = "holdout-samples (leaks identity)"
        return Fold(0, name, tuple(s.id for s in samples if s.id not in test),
                    tuple(s.id for s in samples if s.id in test))

    def _check_folds(self, samples: Sequence[Sample], folds: list[Fold]) -> None:
        labels = {s.id: s.label for s in samples}
        for fold in folds:
            if not fold.test:
                raise ProtocolError(f"protocol {self.name}, fold {fold.name}: no test samples",
                                    "check the data roots")
            present = Counter(labels[i] for i in fold.train)
            absent = [c for c in self.classes if present[c] == 0]
            if absent:
                raise ProtocolError(
                    f"protocol {self.name}, fold {fold.name}: no training sample of class "
                    f"{absent[0]!r}", "use a label space or sample set where every class has "
                    "training samples in every fold")


def _needs_root(name: str) -> bool:
    from .base import init_params
    from .plugins import entry

    params = init_params(entry("dataset", name).factory)
    return "root" in params and params["root"].default is params["root"].empty


def _read_sample_list(path: Path, classes: Sequence[str]) -> tuple[tuple[str, str], ...]:
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"dataset", "subject", "clip", "label"}
        if not need <= set(reader.fieldnames or []):
            raise ProtocolError(f"{path}: a sample list needs columns {sorted(need)}")
        for row in reader:
            label = row["label"].strip()
            if label.isdigit():
                if int(label) >= len(classes):
                    raise ProtocolError(f"{path}: class index {label} is outside the protocol's "
                                        f"{len(classes)} classes {list(classes)}")
                label = classes[int(label)]
            rows.append((normalise_id(row["dataset"], row["subject"], row["clip"]), label))
    dupes = [i for i, n in Counter(r[0] for r in rows).items() if n > 1]
    if dupes:
        raise ProtocolError(f"{path}: duplicate samples {dupes[:3]}")
    return tuple(rows)


def load_protocol(name: str | os.PathLike) -> Protocol:
    """A protocol by name (see `merbench list protocol`) or by the path of a TOML file."""
    path = Path(name)
    if path.suffix != ".toml" or not path.exists():
        files = protocol_files()
        if str(name) not in files:
            import difflib

            close = difflib.get_close_matches(str(name), files, n=3)
            raise UnknownNameError(f"unknown protocol {str(name)!r}",
                                   f"did you mean {', '.join(close)}?" if close
                                   else "see `merbench list protocol`")
        path = files[str(name)]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol file {path} is not valid TOML: {exc}") from exc
    kind = data.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"{path}: kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        classes = tuple(data["classes"])
        refs = tuple(DatasetRef(d["name"], d.get("labels", "native"), d.get("params", {}))
                     for d in data["datasets"])
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"{path}: missing or malformed key {exc}",
                            "a protocol needs `classes` and [[datasets]] with a name") from exc
    sample_list = None
    if "samples" in data:
        sample_list = _read_sample_list(path.parent / data["samples"], classes)
    proto = Protocol(name=data.get("name", path.stem), kind=kind, classes=classes, datasets=refs,
                     description=data.get("description", ""), sample_list=sample_list,
                     train=data.get("train"), test=data.get("test"),
                     split=data.get("split", "subject"),
                     test_fraction=float(data.get("test_fraction", 0.3)),
                     split_seed=int(data.get("split_seed", 0)), source=str(path))
    if kind == "cross-dataset":
        names = [r.name for r in refs]
        if proto.train not in names or proto.test not in names or proto.train == proto.test:
            raise ProtocolError(f"{path}: train and test must name two different datasets of the "
                                f"protocol {names}")
    if kind == "holdout" and proto.split not in ("subject", "sample"):
        raise ProtocolError(f"{path}: split must be 'subject' or 'sample'")
    return proto


def describe(proto: Protocol) -> str:
    """One line for `merbench list protocol`: the description's first line, else the kind and,
    for a composite, its datasets."""
    if proto.description.strip():
        return proto.description.strip().splitlines()[0]
    if proto.composite:
        return f"{proto.kind} over {', '.join(r.name for r in proto.datasets)}"
    return proto.kind

