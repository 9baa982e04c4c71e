"""The Dataset base: samples (metadata only) plus named label spaces.

A label space maps a native label to a class name, or to ``None`` to drop the sample
(e.g. 'others' in the MEGC2019 space). Dataset plugins subclass :class:`Dataset` or just
build one from a list of samples.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DataError, UnknownNameError
from .types import Clip, Sample


class Dataset:
    """Samples of one database with their label spaces; ``load`` reads one sample's input."""

    name: str = ""
    errata: tuple["Erratum", ...] = ()  # applied corrections, listed by `merbench data errata`

    def __init__(self, samples: Sequence[Sample], name: str | None = None,
                 label_spaces: Mapping[str, Mapping[str, str | None]] | None = None,
                 classes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.name = name or self.name
        self.samples: list[Sample] = list(samples)
        spaces = {"native": {s.label: s.label for s in self.samples}}
        spaces.update({k: dict(v) for k, v in (label_spaces or {}).items()})
        self.label_spaces: dict[str, dict[str, str | None]] = spaces
        self._classes = {k: list(v) for k, v in (classes or {}).items()}
        ids = Counter(s.id for s in self.samples)
        dupes = [i for i, n in ids.items() if n > 1]
        if dupes:
            raise DataError(f"dataset {self.name}: duplicate sample ids: {', '.join(dupes[:5])}",
                            "each dataset/subject/clip must be unique")

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"<Dataset {self.name}: {len(self.samples)} samples, {len(self.subjects())} subjects>"

    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self.samples})

    def classes(self, space: str = "native") -> list[str]:
        """Class names of a label space, in the space's fixed order."""
        if space in self._classes:
            return list(self._classes[space])
        mapping = self._mapping(space)
        return sorted({c for c in mapping.values() if c is not None})

    def _mapping(self, space: str) -> dict[str, str | None]:
        if space not in self.label_spaces:
            raise UnknownNameError(f"dataset {self.name} has no label space {space!r}",
                                   f"use one of {', '.join(sorted(self.label_spaces))}")
        return self.label_spaces[space]

    def labelled(self, space: str = "native") -> list[Sample]:
        """Samples relabelled into ``space``; samples mapped to None are dropped."""
        mapping = self._mapping(space)
        out = []
        for s in self.samples:
            if s.label not in mapping:
                raise DataError(f"{s.id}: label {s.label!r} has no class in label space {space!r}",
                                "add it to the space or an erratum for the sample")
            cls = mapping[s.label]
            if cls is not None:
                out.append(s if cls == s.label else s.replace(
                    label=cls, meta=s.meta + (("native_label", s.label),)))
        return out

    def summary(self, space: str = "native") -> dict[str, Any]:
        samples = self.labelled(space)
        counts = Counter(s.label for s in samples)
        return {"samples": len(samples), "subjects": len({s.subject for s in samples}),
                "classes": {c: counts.get(c, 0) for c in self.classes(space)}}

    def load(self, sample: Sample) -> Clip | np.ndarray:
        """The raw input of a sample: a lazily read Clip (or an array for precomputed inputs)."""
        from .video import load_clip

        return load_clip(sample)

    def check(self, sample: Sample) -> list[str]:
        """Problems that would corrupt a benchmark for one sample (used by `merbench data check`)."""
        problems = []
        if sample.onset is not None and sample.offset is not None and sample.apex is not None \
                and not sample.onset <= sample.apex <= sample.offset:
            problems.append(f"{sample.id}: apex {sample.apex} outside onset..offset "
                            f"{sample.onset}..{sample.offset}")
        try:
            clip = self.load(sample)
            if isinstance(clip, Clip):
                clip.frames  # noqa: B018 - reading is the check
        except DataError as exc:
            problems.append(str(exc))
        return problems


class DatasetView(Dataset):
    """The samples of one dataset name inside another dataset (e.g. the casme2 rows of a
    precomputed-inputs index); loading goes to the source."""

    def __init__(self, source: Dataset, name: str) -> None:
        self.source = source
        samples = [s for s in source.samples if s.dataset == name]
        super().__init__(samples, name=name, label_spaces=source.label_spaces,
                         classes=source._classes)

    def load(self, sample: Sample) -> Clip | np.ndarray:
        return self.source.load(sample)


@dataclass(frozen=True)
class Erratum:
    """A known error in a released annotation file, fixed by sample id (never by row number)."""

    sample_id: str
    field: str  # "apex", "offset", "label", "clip", ... or "drop"
    old: Any
    new: Any
    note: str  # one line: what is wrong and where it was found

    def describe(self) -> str:
        return f"{self.sample_id}: {self.field} {self.old!r} -> {self.new!r} ({self.note})"
