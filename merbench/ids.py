"""One spelling per database for sample ids, whatever spelling a file uses.

Each dataset plugin declares its spellings when it registers (``register(name, factory,
ids=IdSpelling(...))``): CASME II ``sub01``; SMIC ``s01`` with clips ``s01_ne_01``; SAMM ``006``
with clips ``006_1_2``; ... The core knows no database: protocol sample lists, ``merbench
score``, precomputed-input indexes and checkpoint look-up ask the registry, so a third-party
dataset's ids are normalised the same way as the built-in ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SUBJECT = re.compile(r"(?:sub|s|spno\.?)?0*(\d+)", flags=re.IGNORECASE)
_CLIP_WITH_SUBJECT = re.compile(r"(?:sub|s|spno\.?)?0*(\d+)_(.+)", flags=re.IGNORECASE)


@dataclass(frozen=True)
class IdSpelling:
    """How a database spells its ids.

    ``subject``: a format for the subject number (``"sub{:02d}"``), applied to any spelling
    with a number (``1``, ``'01'``, ``sub1``, ``s1``, ``6.0``); ``clip_has_subject``: clip names
    start with the subject (``s1_ne_01`` -> ``s01_ne_01``); ``aliases``: other names files use
    for the database (``casmeii``, ``smic-hs``)."""

    subject: str | None = None
    clip_has_subject: bool = False
    aliases: tuple[str, ...] = ()


def cell_text(value: Any) -> str:
    """A cell as stripped text; spreadsheet floats such as ``6.0`` become ``6``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def _spellings() -> dict[str, IdSpelling]:
    from .plugins import registry

    return {name: e.ids for name, e in registry()["dataset"].items() if e.ids is not None}


def spelling(dataset: str) -> IdSpelling:
    """The registered spelling of a dataset (an empty one for datasets that declare none)."""
    return _spellings().get(dataset, IdSpelling())


def dataset_names() -> dict[str, str]:
    """Every registered dataset name and alias (lower case) -> the dataset's name."""
    from .plugins import registry

    out = {name.lower(): name for name in registry()["dataset"]}
    for name, sp in _spellings().items():
        out.update({alias.lower(): name for alias in sp.aliases})
    return out


def canonical_dataset(name: str) -> str:
    """A dataset name as files write it (``CASMEII``, ``smic_hs``) -> its registered name."""
    key = str(name).strip().lower()
    return dataset_names().get(key, key)


def normalise_subject(dataset: str, subject: Any) -> str:
    """``1``, ``'01'``, ``sub1``, ``s1``, ``6.0`` -> the database's own spelling."""
    raw = cell_text(subject)
    fmt = spelling(dataset).subject
    match = _SUBJECT.fullmatch(raw)
    if fmt and match:
        return fmt.format(int(match.group(1)))
    return raw


def normalise_clip(dataset: str, clip: Any) -> str:
    """A clip name whose database writes the subject into it gets that subject respelled
    (SMIC ``s1_ne_01`` -> ``s01_ne_01``, SAMM ``6_1_2`` -> ``006_1_2``); others as written."""
    raw = cell_text(clip)
    sp = spelling(dataset)
    if sp.clip_has_subject and sp.subject:
        m = _CLIP_WITH_SUBJECT.fullmatch(raw)
        if m:
            return f"{sp.subject.format(int(m.group(1)))}_{m.group(2)}"
    return raw


def normalise_id(dataset: str, subject: Any, clip: Any) -> str:
    dataset = canonical_dataset(dataset)
    return f"{dataset}/{normalise_subject(dataset, subject)}/{normalise_clip(dataset, clip)}"
