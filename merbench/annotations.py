"""Shared code of the dataset plugins that read released MER databases as they are shipped.

A release is a root folder holding an annotation table (xlsx or csv) and frame folders. The
plugins stay thin: they declare their columns, errata and layouts; this module finds and reads
the table (openpyxl with ``data_only=True``: some SMIC cells are formulas, whose cached values
are read), spells ids one way per database, applies errata keyed by sample id (never by
spreadsheet row), builds label spaces (the MEGC2019 mapping) and resolves frame-folder
templates such as ``CASME2_RAW_selected/{subject}/{clip}``.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import string
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, cast

from .datasets import Dataset, Erratum, LabelSpace
from .errors import ConfigError, DataError
from .ids import cell_text, normalise_clip, normalise_id, normalise_subject
from .textio import csv_rows, read_text
from .types import Clip, Sample
from .video import index_frames

log = logging.getLogger(__name__)

Record = dict[str, Any]  # one annotation row: canonical column name -> raw cell value

# -- ids: one spelling per database lives in merbench.ids ------------------------------------
subject_id = normalise_subject
clip_id = normalise_clip
sample_id = normalise_id
text = cell_text


# -- finding and reading annotation tables --------------------------------------------------
def release_root(name: str, root: str | os.PathLike[str] | None) -> Path:
    """The release folder, checked to exist."""
    if root is None or str(root) == "":
        raise ConfigError(f"{name}: no root given", f"pass root= (or --data-root {name}=PATH), "
                          "the folder of the database release")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{name}: root {path} is not a folder",
                        f"pass the {name} release folder as root")
    return path


def find_file(name: str, root: Path, patterns: Sequence[str], expected: str,
              annotation: str | os.PathLike[str] | None = None, depth: int = 2,
              required: bool = True) -> Path | None:
    """The annotation file: ``annotation`` (a path, absolute or under root) when given, else the
    first file matching ``patterns`` (case-insensitive globs, earlier patterns first) in root
    or its subfolders up to ``depth`` levels down (nearest first); None if not ``required``."""
    if annotation is not None:
        path = Path(annotation).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DataError(f"{name}: annotation file {path} does not exist",
                            "pass annotation= as a path to the file, absolute or under root")
        return path
    levels: list[list[Path]] = [[root]]
    files: list[list[Path]] = []
    for _ in range(depth + 1):
        here: list[Path] = []
        below: list[Path] = []
        for folder in levels[-1]:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_file():
                    here.append(Path(entry.path))
                elif entry.is_dir() and not entry.name.startswith("."):
                    below.append(Path(entry.path))
        files.append(here)
        levels.append(below)
    for pattern in patterns:
        for level in files:
            for path in level:
                if fnmatch.fnmatchcase(path.name.lower(), pattern.lower()):
                    return path
    if not required:
        return None
    raise DataError(f"{name}: no {' or '.join(patterns)} in {root}; expected {expected}",
                    "pass the release root, or annotation= with the file's path")


def _key(header: Any) -> str:
    return re.sub(r"\s+", " ", text(header)).lower()


def _raw_rows(path: Path, sheet: str | None) -> list[tuple[Any, ...]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        import openpyxl

        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # any parse failure means a bad file
            raise DataError(f"{path} cannot be read as a workbook: {exc}",
                            "restore the file from the database release") from exc
        try:
            if sheet is not None and sheet not in book.sheetnames:
                raise DataError(f"{path.name} has no sheet {sheet!r}; it has "
                                f"{', '.join(book.sheetnames)}")
            ws = book[sheet] if sheet is not None else book.worksheets[0]
            return [tuple(r) for r in ws.iter_rows(values_only=True)]
        finally:
            book.close()
    if path.suffix.lower() == ".csv":  # UTF-8 (BOM or not) or UTF-16, fields of any length
        return [tuple(r) for r in csv_rows(read_text(path, "annotation file"), str(path))]
    raise DataError(f"{path}: unsupported annotation format {path.suffix!r}",
                    "use the release's .xlsx or .csv file")


def sheet_names(path: Path) -> list[str]:
    """The sheets of a workbook ([] for a csv)."""
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        return []
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return list(book.sheetnames)
    finally:
        book.close()


def read_table(path: Path, columns: Mapping[str, Sequence[str]], *,
               optional: Iterable[str] = (), sheet: str | None = None,
               positional: Sequence[str] | None = None, where: str = "") -> list[Record]:
    """Rows of an annotation table as records ``{canonical name: raw cell}``.

    ``columns`` maps each canonical name to the header spellings it may have (compared
    case- and space-insensitively); the header row is the first row that holds all required
    columns (SAMM's is row 14). A headerless table (CAS(ME)^2's csv) is read by position with
    ``positional`` names; a first row that repeats those names is skipped. Every record carries
    ``_row``, its 1-based row number, and ``_table`` (``where``), for messages only. Empty rows
    are skipped.
    """
    where = where or path.name
    rows = _raw_rows(path, sheet)
    optional = set(optional)
    index: dict[str, int] = {}
    if positional is not None:
        index = {name: i for i, name in enumerate(positional)}
        start = 0
        if rows and any(_key(c) in {_key(a) for a in columns.get(n, (n,))} | {n}
                        for n, c in zip(positional, rows[0], strict=False)):
            start = 1
    else:
        wanted = {n: {_key(a) for a in aliases} for n, aliases in columns.items()}
        required = [n for n in columns if n not in optional]
        start, best, best_row = -1, 0, -1
        for i, row in enumerate(rows[:100]):
            keys = [_key(c) for c in row]
            found = sum(any(k in wanted[n] for k in keys) for n in required)
            if found > best:
                best, best_row = found, i
            if found == len(required):
                for n in columns:
                    hits = [j for j, k in enumerate(keys) if k in wanted[n]]
                    if hits:
                        index[n] = hits[0]
                start = i + 1
                break
        if start < 0:
            if best >= 2:  # a header row missing some columns (renamed, deleted)
                keys = {_key(c) for c in rows[best_row]}
                lost = [n for n in required if not keys & wanted[n]]
                raise DataError(f"{where}: the header row (row {best_row + 1}) of {path} has no "
                                f"column {' or '.join(map(repr, columns[lost[0]]))}"
                                + (f" (nor {', '.join(repr(columns[n][0]) for n in lost[1:])})"
                                   if len(lost) > 1 else ""),
                                "restore the release's column names, or pass annotation= with "
                                "the release's file")
            need = ", ".join(repr(columns[n][0]) for n in required)
            raise DataError(f"{where}: no header row with columns {need} in {path}",
                            "is this the release's annotation file? pass annotation= otherwise")
    records: list[Record] = []
    for number, row in enumerate(rows[start:], start=start + 1):
        record: Record = {n: (row[j] if j < len(row) else None) for n, j in index.items()}
        if all(text(v) == "" for v in record.values()):
            continue
        for n in columns:
            record.setdefault(n, None)
        record["_row"] = number
        record["_table"] = where
        records.append(record)
    return records


def frame_number(value: Any, where: str, field: str) -> int:
    """A frame-number cell as int (cells may be ints, integral floats or digit strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raw = text(value)
    if re.fullmatch(r"\d+", raw):
        return int(raw)
    hint = " (an empty cell may be a formula saved without its value: open and save the file " \
           "in a spreadsheet program)" if raw == "" else ""
    raise DataError(f"{where}: {field} {raw or '(empty)'!r} is not a frame number{hint}",
                    "this row needs an erratum keyed by its sample id in the dataset plugin")


# -- errata ---------------------------------------------------------------------------------
def unique_records(records: Sequence[Record], key: Callable[[Record], str]) -> dict[str, Record]:
    """Records by sample id; two rows for one sample (also ``1`` and ``01`` spellings of one
    subject) are a DataError naming both rows, never a silent last-row-wins."""
    by_id: dict[str, Record] = {}
    for record in records:
        sid = key(record)
        if sid in by_id:
            first = by_id[sid]
            spelt = {text(first.get("subject")), text(record.get("subject"))}
            how = f" (subject written {' and '.join(repr(s) for s in sorted(spelt))})" \
                if len(spelt) > 1 else ""
            raise DataError(f"{record.get('_table') or 'annotation file'}: rows "
                            f"{first.get('_row')} and {record.get('_row')} both describe "
                            f"{sid}{how}", "delete the duplicate row, or add an erratum to "
                            "the dataset plugin that drops one of them")
        by_id[sid] = record
    return by_id


def path_field(value: Any, where: str, field: str) -> str:
    """A cell that becomes one component of a frames path: a plain name, never ``..``, a
    separator or an absolute path (which would read frames outside the release root)."""
    raw = text(value)
    if raw in ("", ".", "..") or "/" in raw or "\\" in raw or os.path.isabs(raw) or "\0" in raw:
        raise DataError(f"{where}: {field} {raw!r} is not a plain name: frames are read only "
                        "from inside the release root", "fix the cell in the annotation file")
    return raw


def _same(a: Any, b: Any) -> bool:
    return text(a) == text(b)


def apply_errata(records: Sequence[Record], errata: Sequence[Erratum],
                 key: Callable[[Record], str]) -> tuple[list[Record], tuple[Erratum, ...]]:
    """Apply errata to raw records matched by sample id (``key(record)``) and the old value.

    An erratum whose sample is absent or whose cell no longer holds ``old`` (a corrected
    release) is not applied and not listed. Field ``drop`` removes the sample. Returns the
    corrected records (each with ``_errata``: the fields changed) and the errata applied.
    """
    by_id = {sid: dict(record, _errata=()) for sid, record in unique_records(records, key).items()}
    applied: list[Erratum] = []
    for erratum in errata:
        record = by_id.get(erratum.sample_id)
        if record is None:
            log.debug("erratum for %s not applied: no such sample", erratum.sample_id)
            continue
        if erratum.field == "drop":
            del by_id[erratum.sample_id]
        elif erratum.field in record and _same(record[erratum.field], erratum.old):
            record[erratum.field] = erratum.new
            record["_errata"] = record["_errata"] + (erratum.field,)
        else:
            log.debug("erratum %s not applied: the file holds %r", erratum.describe(),
                      record.get(erratum.field))
            continue
        applied.append(erratum)
    return list(by_id.values()), tuple(applied)


# -- label spaces ---------------------------------------------------------------------------
MEGC2019_CLASSES = ("negative", "positive", "surprise")
_MEGC2019 = {"negative": "negative", "repression": "negative", "anger": "negative",
             "contempt": "negative", "disgust": "negative", "fear": "negative",
             "sadness": "negative", "sad": "negative", "positive": "positive",
             "happiness": "positive", "happy": "positive", "surprise": "surprise"}
_OTHERS = {"others", "other"}  # the "none of the six" label, left out of MEGC2019 on purpose
OBJECTIVE_CLASSES = ("I", "II", "III", "IV", "V", "VI", "VII")


def native_label(value: Any) -> str:
    """A file's emotion with its casing normalised (``Anger`` -> ``anger``)."""
    return text(value).lower()


def megc2019_space(labels: Iterable[str], drop: Iterable[str] = ()) -> LabelSpace:
    """MEGC2019 3 classes: negative = repression, anger, contempt, disgust, fear, sadness;
    positive = happiness; surprise = surprise; others (other) and ``drop`` -> None. Any other
    label (misspelt, empty) -> None too, and is listed as unknown."""
    dropped = set(drop)
    mapping = {lab: None if lab in dropped else _MEGC2019.get(lab) for lab in labels}
    known = set(_MEGC2019) | dropped | _OTHERS
    return LabelSpace(mapping, unknown=[lab for lab in mapping if lab not in known])


def subset_space(labels: Iterable[str], classes: Sequence[str],
                 drop: Iterable[str] = ()) -> LabelSpace:
    """Keep the labels that are one of ``classes``; leave out the ``drop`` labels (e.g. CASME
    II's 5 classes leave out fear and sadness). Any other label -> None, listed as unknown."""
    dropped = set(drop)
    mapping = {lab: lab if lab in classes else None for lab in labels}
    return LabelSpace(mapping, unknown=[lab for lab in mapping
                                        if lab not in classes and lab not in dropped])


def objective_class(value: Any, where: str) -> str:
    """An objective class (Davison et al. 2018) as a roman numeral: ``3`` and ``III`` -> ``III``."""
    raw = text(value).upper()
    if raw.isdigit() and 1 <= int(raw) <= len(OBJECTIVE_CLASSES):
        return OBJECTIVE_CLASSES[int(raw) - 1]
    if raw in OBJECTIVE_CLASSES:
        return raw
    raise DataError(f"{where}: objective class {text(value)!r} is not one of 1-7 / I-VII")


# -- frame layouts --------------------------------------------------------------------------
def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def check_template(name: str, template: str, allowed: Iterable[str]) -> str:
    """A layout template whose fields are all known; ConfigError naming the fields otherwise."""
    allowed = sorted(set(allowed))
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ConfigError(f"{name}: layout {template!r} is not a valid template: {exc}") from exc
    bad = [f for f in fields if f not in allowed or f == ""]
    if bad:
        raise ConfigError(f"{name}: layout {template!r} uses unknown field {{{bad[0]}}}",
                          f"{name} layouts may use {', '.join('{' + a + '}' for a in allowed)}")
    return template


def template_top(template: str) -> str:
    """The fixed folder a template starts with (``CASME2_RAW_selected``), or ''."""
    head = template.split("{", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def require_top(name: str, root: Path, template: str, annotation: Path) -> None:
    """A wrong root fails early, saying what was expected where."""
    top = template_top(template)
    if top and not (root / top).is_dir():
        raise DataError(f"{name}: no {top}/ in {root} (found {annotation.name}); expected the "
                        f"release root that holds {annotation.name} and {top}/",
                        "pass layout= if the frames are elsewhere, or require_frames=False to "
                        "read the annotations only")


def _resolve_case(path: Path, root: Path) -> Path:
    """``path`` under ``root``, with components matched case-insensitively where the exact
    spelling is absent (a CAS(ME)^3 row says clip 'J' for folder 'j')."""
    if path.exists():
        return path
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return path
    current = root
    for part in parts:
        candidate = current / part
        if not candidate.exists():
            try:
                names = {n.lower(): n for n in os.listdir(current)}
            except OSError:
                return path
            if part.lower() not in names:
                return path
            candidate = current / names[part.lower()]
        current = candidate
    return current


def clip_folder(root: Path, template: str, fields: Mapping[str, Any], where: str = "") -> Path:
    """The frames folder of one sample: ``template`` filled with ``fields``, each a plain name
    (:func:`path_field`), so annotation cells cannot lead out of the release root."""
    used = set(template_fields(template))
    values = {k: path_field(v, where or "annotation", k) if k in used else v
              for k, v in fields.items()}
    return _resolve_case(root / template.format_map(values), root)


def discover(root: Path, template: str) -> list[tuple[Path, dict[str, str]]]:
    """Folders matching a template (each field one path component's part), with the field
    values read back from their names; for releases whose folders are the listing (SMIC)."""
    pattern, regex, seen = "", "", set()
    for literal, field, _, _ in string.Formatter().parse(template):
        pattern += _glob_escape(literal)
        regex += re.escape(literal)
        if field is not None:
            pattern += "*"
            regex += f"(?P={field})" if field in seen else f"(?P<{field}>[^/]+)"
            seen.add(field)
    compiled = re.compile(regex)
    found = []
    for path in sorted(root.glob(pattern)):
        if not path.is_dir():
            continue
        match = compiled.fullmatch(path.relative_to(root).as_posix())
        if match:
            found.append((path, match.groupdict()))
    return found


def _glob_escape(literal: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", literal)


# -- the dataset ----------------------------------------------------------------------------
class ReleaseDataset(Dataset):
    """A Dataset read from a release: records its root, layout and applied errata.

    ``field_spaces`` names label spaces whose class is a per-sample fact kept in ``meta``, not
    a function of the emotion label; ``labelled`` reads them from there. By default the
    ``objective`` space (objective classes I-VII) exists when every sample has one.
    """

    def __init__(self, samples: Sequence[Sample], name: str,
                 label_spaces: Mapping[str, Mapping[str, str | None]] | None = None,
                 classes: Mapping[str, Sequence[str]] | None = None,
                 errata: Sequence[Erratum] = (), root: Path | None = None,
                 layout: str = "", annotation: Path | None = None,
                 field_spaces: Mapping[str, str] | None = None) -> None:
        wanted = {"objective": "objective"} if field_spaces is None else dict(field_spaces)
        self.field_spaces = {space: key for space, key in wanted.items()
                             if samples and all(key in dict(s.meta) for s in samples)}
        classes = dict(classes or {})
        if "objective" in self.field_spaces:
            classes.setdefault("objective", OBJECTIVE_CLASSES)
        spaces = dict(label_spaces or {})
        for space, key in self.field_spaces.items():
            values = sorted({v for s in samples for k, v in s.meta if k == key})
            spaces[space] = {v: v for v in values}
        super().__init__(samples, name=name, label_spaces=spaces, classes=classes)
        self.errata = tuple(errata)
        self.root = root
        self.layout = layout
        self.annotation = annotation

    def notes(self) -> list[str]:
        """Facts `merbench data check` shows without failing: clip folders that symlinks
        inside the release lead outside its root (frames are read there)."""
        if self.root is None:
            return []
        root = self.root.resolve()
        outside = []
        for s in self.samples:
            path = Path(s.path) if s.path else None
            if path is not None and path.exists() and not path.resolve().is_relative_to(root):
                outside.append((path, path.resolve()))
        if not outside:
            return []
        return [f"{len(outside)} clip folder(s) lead outside the release root {self.root} "
                f"through symlinks (e.g. {outside[0][0]} -> {outside[0][1]}); their frames are "
                "read there"]

    def labelled(self, space: str = "native") -> list[Sample]:
        if space not in self.field_spaces:
            return super().labelled(space)
        key = self.field_spaces[space]
        out = []
        for s in self.samples:
            value = dict(s.meta).get(key)
            if value is None:
                raise DataError(f"{s.id}: no {key} for label space {space!r}")
            out.append(s.replace(label=value, meta=s.meta + (("native_label", s.label),)))
        return out

    def load(self, sample: Sample) -> Clip | Any:
        if sample.path and not Path(sample.path).exists():
            raise DataError(f"{sample.id}: clip folder {sample.path} does not exist",
                            f"check the {self.name} root ({self.root}) and layout "
                            f"{self.layout!r}")
        if (sample.onset is None or sample.offset is None) and not index_frames(sample.path):
            raise DataError(f"{sample.id}: no frames in {sample.path}",
                            "restore the clip's frames from the release")
        return super().load(sample)

    def check(self, sample: Sample, face: Any = None) -> list[str]:
        return [p if p.startswith(sample.id) else f"{sample.id}: {p}"
                for p in super().check(sample, face)]


def make_sample(name: str, record: Record, subject: str, clip: str, label: str, path: Path,
                meta: Sequence[tuple[str, Any]] = ()) -> Sample:
    """A Sample from a corrected record (``onset``/``apex``/``offset``/``au``/``objective``).

    ``apex`` None (erratum: not annotated) leaves it to be estimated as the middle frame.
    """
    sid = f"{name}/{subject}/{clip}"
    where = f"{sid} (row {record.get('_row')})"
    onset = frame_number(record["onset"], where, "onset")
    offset = frame_number(record["offset"], where, "offset")
    apex_cell = record.get("apex")
    apex = None if apex_cell is None and "apex" in record.get("_errata", ()) \
        else frame_number(apex_cell, where, "apex")
    extra = list(meta)
    if text(record.get("objective")):
        extra.append(("objective", objective_class(record["objective"], where)))
    if record.get("_errata"):
        extra.append(("errata", ",".join(record["_errata"])))
    units = text(record.get("au"))
    return Sample(dataset=name, subject=subject, clip=clip, label=label, onset=onset, apex=apex,
                  offset=offset, apex_estimated=apex is None,
                  action_units="" if units.lower() == "null" else units,
                  path=str(path), meta=tuple(extra))


def release_samples(name: str, records: Sequence[Record], errata: Sequence[Erratum],
                    base: Path, template: str) -> tuple[list[Sample], tuple[Erratum, ...]]:
    """Samples of a release whose rows name subject and clip and whose frames live at
    ``template`` (subject, clip): errata applied by sample id, labels from ``emotion``."""
    records, applied = apply_errata(records, errata,
                                    lambda r: sample_id(name, r["subject"], r["clip"]))
    samples = []
    for r in records:
        subject, clip = subject_id(name, r["subject"]), clip_id(name, r["clip"])
        where = f"{r.get('_table') or name} row {r.get('_row')}"
        samples.append(make_sample(name, r, subject, clip, native_label(r["emotion"]),
                                   clip_folder(base, template, {"subject": subject, "clip": clip},
                                               where)))
    return samples, applied


def open_release(name: str, root: Any, *, patterns: Sequence[str], expected: str,
                 layouts: Sequence[str], fields: Iterable[str],
                 columns: Mapping[str, Sequence[str]],
                 annotation: Any = None, layout: str | None = None, require_frames: bool = True,
                 optional: Iterable[str] = (), sheet: str | None = None,
                 positional: Sequence[str] | None = None) -> tuple[Path, Path, str, list[Record]]:
    """Root, annotation file, frame layout and raw records of a release, checked on the way.

    ``layouts`` are the default templates, tried in order: the first whose fixed top folder
    exists is used (``layout=`` replaces them). With ``require_frames`` a root without that
    folder is an error saying what was expected where.
    """
    base = release_root(name, root)
    path = cast(Path, find_file(name, base, patterns, expected, annotation))
    candidates = [layout] if layout is not None else list(layouts)
    for template in candidates:
        check_template(name, template, fields)
    chosen = next((t for t in candidates if not template_top(t)
                   or (base / template_top(t)).is_dir()), candidates[0])
    if require_frames:
        if len(candidates) > 1 and not (base / template_top(chosen)).is_dir():
            tops = " or ".join(f"{template_top(t)}/" for t in candidates)
            raise DataError(f"{name}: no {tops} in {base} (found {path.name}); expected the "
                            f"release root that holds {path.name} and {tops}",
                            "pass layout= if the frames are elsewhere, or require_frames=False "
                            "to read the annotations only")
        require_top(name, base, chosen, path)
    records = read_table(path, columns, optional=optional, sheet=sheet, positional=positional,
                         where=f"{name}: {path.name}")
    if not records:
        raise DataError(f"{name}: {path} holds no annotation rows")
    return base, path, chosen, records
