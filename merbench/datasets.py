"""The Dataset base: samples (metadata only) plus named label spaces.

A label space maps a native label to a class name, or to ``None`` to drop the sample
(e.g. 'others' in the MEGC2019 space). Dataset plugins subclass :class:`Dataset` or just
build one from a list of samples. Nothing is dropped without a word: :meth:`Dataset.dropped`
names the samples a space leaves out, and a :class:`LabelSpace` tells the labels it leaves out
on purpose from those it does not know (a misspelt or empty emotion cell), which
``merbench data check`` reports as problems and a run warns about.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import DataError, MerbenchError, UnknownNameError
from .types import Clip, Sample

log = logging.getLogger(__name__)

MIN_FRAME_SIDE = 32  # smaller frames are placeholders, not face video (`merbench data check`)


class LabelSpace(dict):  # type: ignore[type-arg]
    """A label space (native label -> class, or None to leave the sample out) that also knows
    which of the labels it leaves out it does not recognise (``unknown``): a misspelt or
    empty emotion, a SMIC folder named ``joy/``. Those are data problems, not a protocol's
    choice."""

    def __init__(self, mapping: Mapping[str, str | None], unknown: Iterable[str] = ()) -> None:
        super().__init__(mapping)
        self.unknown = frozenset(unknown)


class Dataset:
    """Samples of one database with their label spaces; ``load`` reads one sample's input."""

    name: str = ""
    errata: tuple["Erratum", ...] = ()  # applied corrections, listed by `merbench data errata`

    def __init__(self, samples: Sequence[Sample], name: str | None = None,
                 label_spaces: Mapping[str, Mapping[str, str | None]] | None = None,
                 classes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.name = name or self.name
        self.samples: list[Sample] = list(samples)
        # an empty label is no class, in any space
        spaces: dict[str, Mapping[str, str | None]] = {"native": LabelSpace(
            {s.label: s.label or None for s in self.samples},
            unknown=[""] if any(not s.label for s in self.samples) else [])}
        spaces.update(label_spaces or {})
        self.label_spaces: dict[str, dict[str, str | None]] = {k: dict(v)
                                                               for k, v in spaces.items()}
        self._unknown = {k: set(getattr(v, "unknown", ())) | ({""} & set(v))
                         for k, v in spaces.items()}
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

    def dropped(self, space: str = "native") -> dict[str, list[str]]:
        """The samples ``space`` leaves out: native label -> their sample ids."""
        mapping = self._mapping(space)
        out: dict[str, list[str]] = {}
        for s in self.samples:
            if mapping.get(s.label, s.label) is None:
                out.setdefault(s.label, []).append(s.id)
        return out

    def unknown_labels(self, space: str = "native") -> set[str]:
        """Labels ``space`` leaves out because it does not recognise them (not on purpose)."""
        self._mapping(space)
        return set(self._unknown.get(space, ()))

    def label_problems(self) -> list[str]:
        """One line per sample whose label some space does not recognise (misspelt, empty)."""
        spaces: dict[str, list[str]] = {}
        for space in self.label_spaces:
            for label in self.unknown_labels(space):
                spaces.setdefault(label, []).append(space)
        problems = []
        for s in self.samples:
            if s.label in spaces:
                what = "empty label" if not s.label else f"label {s.label!r} is unknown"
                problems.append(f"{s.id}: {what}: label space(s) {', '.join(spaces[s.label])} "
                                "leave it out")
        return problems

    def summary(self, space: str = "native") -> dict[str, Any]:
        """Counts of ``space``; ``left_out`` (native label -> count) and ``unknown`` (label ->
        sample ids, for labels the space does not recognise) when it leaves samples out."""
        samples = self.labelled(space)
        counts = Counter(s.label for s in samples)
        out: dict[str, Any] = {"samples": len(samples),
                               "subjects": len({s.subject for s in samples}),
                               "classes": {c: counts.get(c, 0) for c in self.classes(space)}}
        dropped = self.dropped(space)
        if dropped:
            unknown = self.unknown_labels(space)
            out["left_out"] = {lab: len(ids) for lab, ids in sorted(dropped.items())}
            out["unknown"] = {lab: ids for lab, ids in sorted(dropped.items()) if lab in unknown}
        return out

    def load(self, sample: Sample) -> Clip | np.ndarray:
        """The raw input of a sample: a lazily read Clip (or an array for precomputed inputs)."""
        from .video import load_clip

        return load_clip(sample)

    def fingerprint(self, sample: Sample) -> Any:
        """A cheap fingerprint of the files ``load(sample)`` reads (part of the cache key):
        size and modification times of the clip's frame files or video, without reading
        them. A dataset whose samples come from elsewhere overrides this."""
        from .video import fingerprint, source_files

        return fingerprint(source_files(sample))

    def check(self, sample: Sample, face: Callable[[Clip], Any] | None = None) -> list[str]:
        """Problems that would make a run fail or go wrong for one sample (`merbench data
        check`): annotations, every frame readable and of one size, frames large enough to
        hold a face, and with ``face`` (a face-crop step) a face found on the onset frame.
        Each problem is one line, reported once."""
        try:
            clip = self.load(sample)
            if not isinstance(clip, Clip):
                return []
            clip.validate()
            shape = None
            for k, frame in enumerate(clip.iter_frames()):  # streamed: long clips too
                if shape is None:
                    shape = frame.shape
                    if min(shape[:2]) < MIN_FRAME_SIDE:
                        return [f"{sample.id}: frames are {shape[1]}x{shape[0]} pixels, too "
                                f"small to hold a face (placeholder frames?; at least "
                                f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} expected)"]
                elif frame.shape != shape:
                    number = clip.frame_numbers[k] if clip.frame_numbers else k
                    return [f"{sample.id}: frame {number} is {frame.shape[1]}x{frame.shape[0]}, "
                            f"the first frame is {shape[1]}x{shape[0]}"]
            if face is not None:
                face(clip)
        except MerbenchError as exc:
            return [str(exc) if str(exc).startswith(sample.id) else f"{sample.id}: {exc}"]
        return []


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

    def fingerprint(self, sample: Sample) -> Any:
        return self.source.fingerprint(sample)


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
