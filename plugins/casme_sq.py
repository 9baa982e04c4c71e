"""CAS(ME)^2 (Qu et al. 2018), Part A long videos: 57 micro- and 300 macro-expressions of 22
subjects, 30 fps. ``expressions`` micro (default) | macro | all.

Release layout (``root`` is the folder that holds both)::

    CAS(ME)^2code_final(Updated).csv       (or .xlsx) headerless, 11 columns: participant,
        expression name, onset, apex, offset, AUs, emotion (negative/positive/surprise/others),
        expression type, self-reported emotion, duration, video folder (s15/15_0401girlcrashing)
    rawpic/s15/15_0401girlcrashing/img557.jpg    frame 557 of that long video

A sample is one annotated expression inside a long video: its path is the video's frames folder
and onset..offset select the frames, by the number in the file name. Subjects are the release's
folder names (``s15``; participant 1 of the file), clips the expression names (``anger1_1``).
``layout=`` overrides the frames folder (fields {subject}, {video}; e.g. ``cropped/{subject}/
{video}`` for cropped frames).

Errata: an offset of 0 means the offset was not annotated (44 macro-expressions): the clip ends
at the apex. An apex of 0 (not annotated) or after the offset (three macro-expressions) is
replaced by the middle frame (apex_estimated). The 57 micro-expressions need none.

Label spaces: ``native`` (the coders' emotion: negative, positive, surprise, others) and
``megc2019`` (others dropped). The self-reported emotion is in ``meta``.
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, Record, ReleaseDataset, apply_errata,
                                  clip_folder, clip_id, make_sample, megc2019_space, native_label,
                                  open_release, sample_id, subject_id, text)
from merbench.datasets import Erratum
from merbench.errors import ConfigError, DataError
from merbench.ids import IdSpelling

NAME = "casme_sq"
LAYOUT = "rawpic/{subject}/{video}"
EXPRESSIONS = {"micro": ("micro-expression",), "macro": ("macro-expression",),
               "all": ("micro-expression", "macro-expression")}
POSITIONAL = ("participant", "clip", "onset", "apex", "offset", "au", "emotion", "type",
              "self_report", "duration", "video")
COLUMNS = {"participant": ("Subject", "participant"), "clip": ("Expression name", "Filename"),
           "onset": ("Onset", "OnsetFrame"), "apex": ("Apex", "ApexFrame"),
           "offset": ("Offset", "OffsetFrame"), "emotion": ("Estimated Emotion", "emotion")}

ERRATA = (
    Erratum("casme_sq/s27/disgust1_5", "apex", 1230, None,
            "apex 1230 is after offset 1224 in CAS(ME)^2code_final(Updated); middle frame used"),
    Erratum("casme_sq/s31/happy2_1", "apex", 2203, None,
            "apex 2203 is after offset 2202 in CAS(ME)^2code_final(Updated); middle frame used"),
    Erratum("casme_sq/s32/anger1_12", "apex", 2455, None,
            "apex 2455 is after offset 2451 in CAS(ME)^2code_final(Updated); middle frame used"),
)


def _subject(record: Record) -> str:
    folder = text(record["video"]).replace("\\", "/").split("/")[0]
    if not folder:
        raise DataError(f"casme_sq: row {record['_row']} has no video folder (11th column)",
                        "use the release's CAS(ME)^2code_final(Updated) file")
    return subject_id(NAME, folder)


def _key(record: Record) -> str:
    return sample_id(NAME, _subject(record), record["clip"])


def _not_annotated(records: list[Record]) -> list[Erratum]:
    """The file's convention: 0 in the offset or apex column means 'not annotated'."""
    out = []
    for r in records:
        if text(r["offset"]) == "0":
            apex = text(r["apex"])
            out.append(Erratum(_key(r), "offset", 0, int(apex) if apex.isdigit() else apex,
                               "offset 0 = not annotated in CAS(ME)^2code_final; the clip ends "
                               "at the apex"))
        if text(r["apex"]) == "0":
            out.append(Erratum(_key(r), "apex", 0, None,
                               "apex 0 = not annotated in CAS(ME)^2code_final; middle frame used"))
    return out


def CASMESq(root: Any, expressions: str = "micro", layout: str | None = None,
            annotation: str | None = None, require_frames: bool = True) -> ReleaseDataset:
    """CAS(ME)^2 expressions from the release folder (micro-expressions by default)."""
    if expressions not in EXPRESSIONS:
        raise ConfigError(f"casme_sq: unknown expressions {expressions!r}",
                          "use micro, macro or all")
    base, path, template, records = open_release(
        NAME, root, patterns=("CAS(ME)^2code_final*.csv", "CAS(ME)^2code_final*.xlsx",
                              "CAS(ME)2code_final*.*"),
        expected="the release root that holds it and rawpic/", layouts=(LAYOUT,),
        fields=("subject", "video"), columns=COLUMNS, annotation=annotation, layout=layout,
        require_frames=require_frames, positional=POSITIONAL)
    kinds = EXPRESSIONS[expressions]
    records = [r for r in records if text(r["type"]).lower() in kinds]
    records, applied = apply_errata(records, ERRATA + tuple(_not_annotated(records)), _key)
    samples = []
    for r in records:
        subject, clip = _subject(r), clip_id(NAME, r["clip"])
        video = text(r["video"]).replace("\\", "/").split("/")[-1]
        samples.append(make_sample(
            NAME, r, subject, clip, native_label(r["emotion"]),
            clip_folder(base, template, {"subject": subject, "video": video},
                        f"{r['_table']} row {r['_row']}"),
            meta=(("type", text(r["type"])), ("self_report", native_label(r["self_report"])),
                  ("video", video))))
    labels = sorted({s.label for s in samples})
    return ReleaseDataset(samples, NAME, errata=applied, root=base, layout=template,
                          annotation=path, label_spaces={"megc2019": megc2019_space(labels)},
                          classes={"megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, CASMESq, description="CAS(ME)^2 micro-expressions (release folder)",
             ids=IdSpelling(subject="s{:02d}", aliases=("cas(me)^2",)))
