"""MMEW (Ben et al. 2021): 300 micro-expressions of 30 subjects, 90 fps (234 without 'others').

Release layout (``root`` is the folder that holds both)::

    MMEW_Micro_Exp.xlsx   (or a csv with the same columns, e.g. MMEW_Micro_Exp_delete_others.csv)
        Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Action Units, Estimated Emotion
    Micro_Expression/happiness/S01-01-001/15.jpg     frame 15 of clip S01-01-001

Subjects are spelled ``S01`` (the file writes 1). The released file needs no errata (checked:
onset <= apex <= offset everywhere, ids unique). ``layout=`` overrides the frame folders
(fields {emotion}, {subject}, {clip}).

Label spaces: ``native`` (anger, disgust, fear, happiness, sadness, surprise, and others when
the file has them) and ``megc2019`` (negative = anger, disgust, fear, sadness; positive =
happiness; surprise; others dropped).
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, ReleaseDataset, clip_folder, clip_id,
                                  make_sample, megc2019_space, native_label, open_release,
                                  sample_id, subject_id, text, unique_records)
from merbench.ids import IdSpelling

NAME = "mmew"
LAYOUT = "Micro_Expression/{emotion}/{clip}"
COLUMNS = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("OnsetFrame",),
           "apex": ("ApexFrame",), "offset": ("OffsetFrame",), "au": ("Action Units",),
           "emotion": ("Estimated Emotion",)}


def MMEW(root: Any, layout: str | None = None, annotation: str | None = None,
         require_frames: bool = True) -> ReleaseDataset:
    """MMEW micro-expressions from the release folder."""
    base, path, template, records = open_release(
        NAME, root, patterns=("MMEW_Micro_Exp.xlsx", "MMEW_Micro_Exp*.xlsx", "MMEW_Micro_Exp*.csv"),
        expected="the release root that holds it and Micro_Expression/", layouts=(LAYOUT,),
        fields=("emotion", "subject", "clip"), columns=COLUMNS, annotation=annotation,
        layout=layout, require_frames=require_frames, optional=("au",))
    samples = []
    for r in unique_records(records, lambda r: sample_id(NAME, r["subject"], r["clip"])).values():
        subject, clip = subject_id(NAME, r["subject"]), clip_id(NAME, r["clip"])
        folder = clip_folder(base, template, {"emotion": text(r["emotion"]), "subject": subject,
                                              "clip": clip}, f"{r['_table']} row {r['_row']}")
        samples.append(make_sample(NAME, r, subject, clip, native_label(r["emotion"]), folder))
    labels = sorted({s.label for s in samples})
    return ReleaseDataset(samples, NAME, root=base, layout=template,
                          annotation=path, label_spaces={"megc2019": megc2019_space(labels)},
                          classes={"megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, MMEW, description="MMEW micro-expressions (release folder)",
             ids=IdSpelling(subject="S{:02d}"))
