"""One spelling per database for sample ids, whatever spelling a file uses.

CASME II subjects ``sub01``; SMIC subjects ``s01`` and clips ``s01_ne_01``; SAMM subjects
``006``. Used by dataset plugins, protocol sample lists and ``merbench score``.
"""
from __future__ import annotations

import re


def normalise_subject(dataset: str, subject: str) -> str:
    subject = str(subject).strip()
    if subject.endswith(".0") and subject[:-2].isdigit():  # spreadsheet floats
        subject = subject[:-2]
    digits = re.fullmatch(r"(?:sub|s|S|Sub|SUB)?0*(\d+)", subject)
    if dataset == "casme2" and digits:
        return f"sub{int(digits.group(1)):02d}"
    if dataset == "smic" and digits:
        return f"s{int(digits.group(1)):02d}"
    if dataset == "samm" and digits:
        return f"{int(digits.group(1)):03d}"
    return subject


def normalise_clip(dataset: str, clip: str) -> str:
    clip = str(clip).strip()
    if dataset == "smic":
        m = re.fullmatch(r"s0*(\d+)_(.*)", clip)
        if m:
            return f"s{int(m.group(1)):02d}_{m.group(2)}"
    return clip


def normalise_id(dataset: str, subject: str, clip: str) -> str:
    dataset = dataset.strip().lower()
    return f"{dataset}/{normalise_subject(dataset, subject)}/{normalise_clip(dataset, clip)}"
