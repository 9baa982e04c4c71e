"""Protocols as data: TOML files in protocols/ -> sample sets, label spaces and folds.

Kinds: ``loso`` (leave one subject out, over one dataset or a composite), ``cross-dataset``
(train on all of A, test on B), ``leave-one-dataset-out``, ``holdout`` (a seeded
subject-disjoint split, or the sample-level split some papers use, flagged as leaking
identity). Folds are deterministic: they depend on the protocol file and the samples only.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError, ProtocolError, UnknownNameError
from .ids import normalise_id
from .textio import csv_rows, read_text
from .types import Fold, Sample

log = logging.getLogger(__name__)

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
    def roots_needed(self) -> list[str]:
        """The protocol's datasets that are read from files (``--data-root NAME=DIR``)."""
        return [r.name for r in self.datasets if _needs_root(r.name)]

    def open_datasets(self, data_roots: Mapping[str, str] | None = None,
                      dataset_params: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> dict[str, Any]:
        """Open each of the protocol's datasets (its root from ``data_roots``, its parameters
        from the protocol file, then ``dataset_params``)."""
        from . import dataset as open_dataset

        self.check_dataset_names(data_roots, dataset_params)
        missing = [n for n in self.roots_needed() if (data_roots or {}).get(n) is None]
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

    def check_dataset_names(self, data_roots: Mapping[str, Any] | None = None,
                            dataset_params: Mapping[str, Any] | None = None) -> None:
        """A data root or dataset parameter for a dataset the protocol does not use would be
        ignored: it is refused instead, naming the protocol's datasets."""
        names = [r.name for r in self.datasets]
        for option, given in (("--data-root", data_roots), ("--data-param", dataset_params)):
            for name in given or {}:
                if name not in names:
                    raise ConfigError(f"{option} {name}: protocol {self.name} does not use a "
                                      f"dataset {name!r}",
                                      f"its datasets: {', '.join(names)}")

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
            ds = opened[ref.name]
            labelled = ds.labelled(ref.labels)
            if not labelled:
                raise DataError(f"protocol {self.name}: dataset {ref.name} has no samples in "
                                f"label space {ref.labels!r}", "check its data root or inputs")
            self._say_left_out(ds, ref.labels)
            samples.extend(labelled)
        return self.select(samples)

    def _say_left_out(self, ds: Any, space: str) -> None:
        """What the label space leaves out: on purpose (info), or because it does not know
        the label (a warning naming the samples: a misspelt or empty emotion cell)."""
        dropped = ds.dropped(space) if hasattr(ds, "dropped") else {}
        if not dropped:
            return
        unknown = ds.unknown_labels(space)
        log.info("protocol %s: label space %s of %s leaves out %d samples (%s)", self.name, space,
                 ds.name, sum(map(len, dropped.values())),
                 ", ".join(f"{lab or '(empty)'} {len(ids)}" for lab, ids in sorted(dropped.items())))
        for label in sorted(unknown & set(dropped)):
            ids = dropped[label]
            log.warning("%s: %d sample(s) left out of label space %s: %s %s (%s%s); see `merbench "
                        "data check %s`", ds.name, len(ids), space,
                        "empty label" if not label else "unknown label", repr(label) if label
                        else "", ", ".join(ids[:5]), " ..." if len(ids) > 5 else "", ds.name)

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
        if not folds:
            raise ProtocolError(f"protocol {self.name}: no samples, so no folds",
                                "check the data roots or --inputs")
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


def _read_sample_list(path: Path, classes: Sequence[str], where: str = ""
                      ) -> tuple[tuple[str, str], ...]:
    where = where or str(path)
    text = read_text(path, f"{where}: samples file", ProtocolError)
    lines = csv_rows(text, str(path), ProtocolError)
    header = [h.strip().lower() for h in next(lines, [])]
    need = ["dataset", "subject", "clip", "label"]
    if not set(need) <= set(header):
        raise ProtocolError(f"{path}: a sample list needs a header with columns "
                            f"{', '.join(need)}; it has {', '.join(header) or 'none'}")
    col = {name: header.index(name) for name in need}
    rows, lines_of = [], {}
    for number, row in enumerate(lines, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise ProtocolError(f"{path} line {number}: {len(row)} fields, the header has "
                                f"{len(header)}")
        label = row[col["label"]].strip()
        if label.isdigit():
            if int(label) >= len(classes):
                raise ProtocolError(f"{path} line {number}: class index {label} is outside the "
                                    f"protocol's {len(classes)} classes {list(classes)}")
            label = classes[int(label)]
        sid = normalise_id(row[col["dataset"]], row[col["subject"]], row[col["clip"]])
        if sid in lines_of:
            raise ProtocolError(f"{path}: lines {lines_of[sid]} and {number} both list {sid}")
        lines_of[sid] = number
        rows.append((sid, label))
    return tuple(rows)


# key -> (expected type(s), what to say); "datasets" entries are checked on their own
_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"), "kind": (str, f"one of {', '.join(KINDS)}"),
    "classes": (list, "a list of class names"), "datasets": (list, "[[datasets]] tables"),
    "description": (str, "a string"), "samples": (str, "a file name (a CSV beside the file)"),
    "train": (str, "a dataset name"), "test": (str, "a dataset name"),
    "split": (str, "'subject' or 'sample'"), "test_fraction": ((int, float), "a number in (0, 1)"),
    "split_seed": (int, "an integer"),
}
_DATASET_KEYS: dict[str, tuple[type, str]] = {
    "name": (str, "a dataset name"), "labels": (str, "a label-space name"),
    "params": (dict, "a table of dataset parameters")}


def _check_keys(path: Path, data: Mapping[str, Any], known: Mapping[str, tuple[Any, str]],
                where: str) -> None:
    """Unknown keys and wrong types, each one line naming the key and the file."""
    import difflib

    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            raise ProtocolError(f"{path}: unknown key {where + key!r}"
                                + (f" (did you mean {close[0]!r}?)" if close else ""),
                                f"known keys: {', '.join(known)}")
        types, expected = known[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ProtocolError(f"{path}: {where}{key} = {value!r} is not {expected}")


def _check_protocol_data(path: Path, data: Mapping[str, Any]) -> None:
    _check_keys(path, data, _KEYS, "")
    for key in ("kind", "classes", "datasets"):
        if key not in data:
            raise ProtocolError(f"{path}: missing key {key!r}",
                                "a protocol needs kind, classes and [[datasets]] with a name")
    if data["kind"] not in KINDS:
        raise ProtocolError(f"{path}: kind {data['kind']!r} is not one of {', '.join(KINDS)}")
    classes = data["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) and c.strip() for c in classes):
        raise ProtocolError(f"{path}: classes = {classes!r} must be two or more class names")
    dupes = [c for c, n in Counter(classes).items() if n > 1]
    if dupes:
        raise ProtocolError(f"{path}: class {dupes[0]!r} is listed twice in classes",
                            "list each class once")
    if not data["datasets"]:
        raise ProtocolError(f"{path}: datasets is empty", "add a [[datasets]] table with a name")
    for k, ref in enumerate(data["datasets"]):
        if not isinstance(ref, dict):
            raise ProtocolError(f"{path}: datasets entry {ref!r} is not a table",
                                "write each dataset as a [[datasets]] table with name = ...")
        _check_keys(path, ref, _DATASET_KEYS, f"datasets[{k}].")
        if "name" not in ref:
            raise ProtocolError(f"{path}: datasets[{k}] has no name")
    names = [ref["name"] for ref in data["datasets"]]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{path}: a dataset is listed twice in datasets: {names}")
    fraction = data.get("test_fraction", 0.3)
    if not 0 < fraction < 1:
        raise ProtocolError(f"{path}: test_fraction = {fraction!r} is outside (0, 1)",
                            "use e.g. test_fraction = 0.3")


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
        data = tomllib.loads(read_text(path, "protocol file", ProtocolError))
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol file {path} is not valid TOML: {exc}") from exc
    _check_protocol_data(path, data)
    kind = data["kind"]
    classes = tuple(data["classes"])
    refs = tuple(DatasetRef(d["name"], d.get("labels", "native"), d.get("params", {}))
                 for d in data["datasets"])
    sample_list = None
    if "samples" in data:
        sample_list = _read_sample_list(path.parent / data["samples"], classes, str(path))
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

