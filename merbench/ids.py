"""One spelling per database for sample ids, whatever spelling a file uses.

CASME II ``sub01``; SMIC ``s01`` with clips ``s01_ne_01``; SAMM ``006`` with clips ``006_1_2``;
CAS(ME)^2 ``s15``; CAS(ME)^3 ``spNO.1``; MMEW ``S01``. Used by the dataset plugins, protocol
sample lists, ``merbench score`` and checkpoint look-up, so a sample has one id everywhere.
"""
from __future__ import annotations

import re
from typing import Any

SUBJECT_FORMATS = {"casme2": "sub{:02d}", "smic": "s{:02d}", "samm": "{:03d}",
                   "casme_sq": "s{:02d}", "casme3a": "spNO.{:d}", "mmew": "S{:02d}"}
_SUBJECT = re.compile(r"(?:sub|s|spno\.?)?0*(\d+)", flags=re.IGNORECASE)


def cell_text(value: Any) -> str:
    """A cell as stripped text; spreadsheet floats such as ``6.0`` become ``6``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") and text[:-2].isdigit() else text


def normalise_subject(dataset: str, subject: Any) -> str:
    """``1``, ``'01'``, ``sub1``, ``s1``, ``6.0`` -> the database's own spelling."""
    raw = cell_text(subject)
    match = _SUBJECT.fullmatch(raw)
    if dataset in SUBJECT_FORMATS and match:
        return SUBJECT_FORMATS[dataset].format(int(match.group(1)))
    return raw


def normalise_clip(dataset: str, clip: Any) -> str:
    """SMIC ``s1_ne_01`` -> ``s01_ne_01``; SAMM ``6_1_2`` -> ``006_1_2``; others as written."""
    raw = cell_text(clip)
    if dataset == "smic":
        m = re.fullmatch(r"s0*(\d+)_(.*)", raw)
        if m:
            return f"s{int(m.group(1)):02d}_{m.group(2)}"
    if dataset == "samm":
        m = re.fullmatch(r"0*(\d+)_(.+)", raw)
        if m:
            return f"{int(m.group(1)):03d}_{m.group(2)}"
    return raw


def normalise_id(dataset: str, subject: Any, clip: Any) -> str:
    dataset = dataset.strip().lower()
    return f"{dataset}/{normalise_subject(dataset, subject)}/{normalise_clip(dataset, clip)}"
