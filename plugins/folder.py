"""Precomputed inputs (images or .npy arrays) listed in an index CSV, evaluated directly.

Many MEGC2019 papers publish their inputs (e.g. 28x28 optical-flow images) rather than code;
this dataset lets any protocol run on them. The index CSV has columns ``dataset, subject,
clip, label, path`` (path relative to the CSV's folder, and inside it: no ``..``, no absolute
path; a symlink inside the folder may lead elsewhere), one row per sample::

    dataset,subject,clip,label,path
    samm,6,006_1_2,0,samm/006_1_2.png

Each sample keeps the dataset/subject/clip id of its row, spelled as the dataset plugins spell
it (SAMM subject 6 -> 006, SMIC s1 -> s01), so protocol sample lists match. Images are read
with OpenCV in its BGR order; ``channels`` reorders them (e.g. ``"rgb"``). ``load(sample)``
returns the H x W x C uint8 image, or the .npy array as stored.

Label spaces: ``native`` (the labels as written) and, when every label is 0/1/2 or
negative/positive/surprise, ``megc2019`` (0 -> negative, 1 -> positive, 2 -> surprise).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from merbench import hookimpl
from merbench.annotations import MEGC2019_CLASSES, clip_id, subject_id
from merbench.datasets import Dataset
from merbench.errors import ConfigError, DataError
from merbench.textio import csv_rows, read_text
from merbench.types import Sample
from merbench.video import IMAGE_EXTENSIONS, image_problem

COLUMNS = ("dataset", "subject", "clip", "label", "path")


def _index_path(root: Any, index: Any) -> Path:
    if root is None and index is None:
        raise ConfigError("folder: no index given",
                          "pass root= (an index CSV, or a folder holding index.csv) or index=")
    if root is not None and Path(root).is_file():
        if index is not None:
            raise ConfigError("folder: root is already an index CSV; leave index= out")
        return Path(root)
    if root is not None and not Path(root).is_dir():
        raise DataError(f"folder: {root} does not exist",
                        "pass an index CSV or the folder that holds index.csv")
    path = Path(index) if index is not None else Path("index.csv")
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.csv")) if path.parent.is_dir() else []
        raise DataError(f"folder: {path.parent} holds no {path.name}"
                        + (f" (CSV files there: {', '.join(others[:5])})" if others else ""),
                        f"pass the index CSV itself, e.g. {path.parent / others[0]}" if others
                        else "write index.csv with columns " + ", ".join(COLUMNS))
    return path


def _megc2019(labels: set[str]) -> dict[str, str] | None:
    if labels <= {"0", "1", "2"}:
        return {lab: MEGC2019_CLASSES[int(lab)] for lab in labels}
    if {lab.lower() for lab in labels} <= set(MEGC2019_CLASSES):
        return {lab: lab.lower() for lab in labels}
    return None


class Folder(Dataset):
    """Precomputed inputs described by an index CSV (see the module docstring)."""

    name = "folder"

    def __init__(self, root: Any = None, index: Any = None, channels: str = "bgr") -> None:
        order = str(channels).lower()
        if sorted(order) != sorted("bgr"):
            raise ConfigError(f"folder: channels {channels!r} is not an order of b, g, r",
                              "use bgr (as OpenCV reads) or rgb")
        self.channels = order
        self._order = [("bgr").index(c) for c in order]
        self.index = _index_path(root, index)
        super().__init__(self._read(), name="folder")
        labels = {s.label for s in self.samples}
        megc = _megc2019(labels) if labels else None
        if megc is not None:
            self.label_spaces["megc2019"] = dict(megc)
            self._classes["megc2019"] = list(MEGC2019_CLASSES)

    def _read(self) -> list[Sample]:
        lines = csv_rows(read_text(self.index, "folder: index"), f"folder: {self.index}")
        header = [h.strip().lower() for h in next(lines, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"folder: {self.index} lacks column(s) {', '.join(missing)}",
                            f"its header must name {', '.join(COLUMNS)}")
        samples, rows_of = [], {}
        for number, cells in enumerate(lines, start=2):
            row = {h: (cells[k].strip() if k < len(cells) else "") for k, h in enumerate(header)}
            if not any(row.values()):
                continue
            empty = [c for c in COLUMNS if not row.get(c)]
            if empty:
                raise DataError(f"folder: {self.index} row {number} has no {empty[0]}",
                                "fill every column of the index")
            dataset = row["dataset"].lower()
            sample = Sample(dataset=dataset, subject=subject_id(dataset, row["subject"]),
                            clip=clip_id(dataset, row["clip"]), label=row["label"],
                            path=str(self._inside(row["path"], number)))
            if sample.id in rows_of:
                raise DataError(f"folder: {self.index} rows {rows_of[sample.id]} and {number} "
                                f"both describe {sample.id}", "delete one of the two rows")
            rows_of[sample.id] = number
            samples.append(sample)
        if not samples:
            raise DataError(f"folder: {self.index} lists no samples")
        return samples

    def _inside(self, cell: str, number: int) -> Path:
        """An index path, which must stay inside the index's folder (no ``..``, not absolute):
        an index never makes merbench read files from elsewhere."""
        relative = Path(cell)
        normal = os.path.normpath(cell)
        if relative.is_absolute() or normal == ".." or normal.startswith(".." + os.sep):
            raise DataError(f"folder: {self.index} row {number}: path {cell!r} leads outside "
                            f"the index's folder {self.index.parent}",
                            "give paths relative to the index's folder, inside it")
        return self.index.parent / relative

    def datasets(self) -> list[str]:
        """The dataset names the index holds."""
        return sorted({s.dataset for s in self.samples})

    def for_dataset(self, name: str) -> list[Sample]:
        """The index rows of one dataset, so a protocol can take its samples from them."""
        return [s for s in self.samples if s.dataset == name]

    def load(self, sample: Sample) -> np.ndarray:
        """The precomputed input: an image (H x W x C uint8, channels as asked) or a .npy array."""
        path = Path(sample.path)
        if not path.is_file():
            raise DataError(f"{sample.id}: input file {path} does not exist",
                            f"fix its path in {self.index} (paths are relative to its folder)")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{sample.id}: {path} is not a readable .npy array: {exc}") from exc
        if suffix not in IMAGE_EXTENSIONS:
            raise DataError(f"{sample.id}: {path} is neither an image nor a .npy array",
                            f"use {', '.join(sorted(IMAGE_EXTENSIONS))} or .npy")
        import cv2

        data = path.read_bytes()
        problem = image_problem(data, suffix)
        image = None if problem else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{sample.id}: image {path} {problem or 'is unreadable or corrupt'}",
                            f"restore it, or fix its row in {self.index}")
        return image if self.channels == "bgr" else np.ascontiguousarray(image[..., self._order])


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register("folder", Folder, description="precomputed inputs (images / .npy) from an index CSV",
             inputs=True)
