"""CAS(ME)^3 Part A (Li et al. 2022): 860 micro-expressions of 94 subjects, 30 fps, with depth.
Registered as ``casme3a``.

Release layout (``root`` is the Part A folder)::

    annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx   sheet 'label': Subject, Filename,
        Onset, Apex, Offset (jpg indices), AU, Objective class, emotion
    Part_A_ME_clip/frame/spNO.1_a_355/355.jpg              modality="color" (default)
    Part_A_ME_clip/depth/spNO.1_a_355/355.png              modality="depth"

One video (``a``) may hold several micro-expressions, so a clip is named by video and onset,
as the release names its clip folders: sample ``casme3a/spNO.1/a_355``. Layout fields:
{subject}, {file} (the video letter), {onset}, {clip}; a nested ``Part_A_ME_clip/Part_A_ME_clip/``
(as some archives unpack) is found too. Folder names are matched case-insensitively.

Errata: clip 'J' of spNO.14 is video 'j'; three rows write 'Others' for 'others'. Not fixed
(no safe correction known; ``merbench data check`` reports them if frames are missing):
spNO.216/e_0 (onset and apex 0), spNO.214/c_5 (offset 3460, 115 s after the onset).

Label spaces: ``native`` (anger, disgust, fear, happy, others, sad, surprise); ``4class``
(negative = anger, disgust, fear, sad; positive = happy; surprise; others); ``megc2019``
(others dropped); ``objective`` (I-VII).
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, ReleaseDataset, apply_errata, clip_folder,
                                  make_sample, megc2019_space, native_label, open_release,
                                  sample_id, subject_id, text)
from merbench.datasets import Erratum, LabelSpace
from merbench.errors import ConfigError
from merbench.ids import IdSpelling

NAME = "casme3a"
FOUR_CLASSES = ("negative", "positive", "surprise", "others")
MODALITIES = {"color": "frame", "depth": "depth"}
COLUMNS = {"subject": ("Subject",), "file": ("Filename",), "onset": ("Onset",),
           "apex": ("Apex",), "offset": ("Offset",), "au": ("AU",),
           "objective": ("Objective class",), "emotion": ("emotion",)}

ERRATA = (
    Erratum("casme3a/spNO.14/J_1012", "file", "J", "j",
            "Filename 'J' in cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx; the videos are a-m"),
    Erratum("casme3a/spNO.168/a_4", "emotion", "Others", "others",
            "'Others' for 'others' in cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"),
    Erratum("casme3a/spNO.194/a_7", "emotion", "Others", "others",
            "'Others' for 'others' in cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"),
    Erratum("casme3a/spNO.194/a_561", "emotion", "Others", "others",
            "'Others' for 'others' in cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"),
)


def _clip(record: dict[str, Any]) -> str:
    return f"{text(record['file'])}_{text(record['onset'])}"


def CASME3A(root: Any, modality: str = "color", layout: str | None = None,
            annotation: str | None = None, require_frames: bool = True) -> ReleaseDataset:
    """CAS(ME)^3 Part A micro-expressions from the release folder (color or depth frames)."""
    if modality not in MODALITIES:
        raise ConfigError(f"casme3a: unknown modality {modality!r}", "use color or depth")
    sub = MODALITIES[modality]
    base, path, template, records = open_release(
        NAME, root, patterns=("cas(me)3_part_A_ME_label_JpgIndex*.xlsx",
                              "cas(me)3_part_A_ME_label*.xlsx"),
        expected="the Part A root that holds it (or annotation/ with it) and Part_A_ME_clip/",
        layouts=(f"Part_A_ME_clip/{sub}/{{subject}}_{{file}}_{{onset}}",
                 f"Part_A_ME_clip/Part_A_ME_clip/{sub}/{{subject}}_{{file}}_{{onset}}"),
        fields=("subject", "file", "onset", "clip"), columns=COLUMNS, annotation=annotation,
        layout=layout, require_frames=require_frames, optional=("au", "objective"))
    records, applied = apply_errata(records, ERRATA,
                                    lambda r: sample_id(NAME, r["subject"], _clip(r)))
    samples = []
    for r in records:
        subject, clip = subject_id(NAME, r["subject"]), _clip(r)
        folder = clip_folder(base, template, {"subject": subject, "file": text(r["file"]),
                                              "onset": text(r["onset"]), "clip": clip},
                             f"{r['_table']} row {r['_row']}")
        samples.append(make_sample(NAME, r, subject, clip, native_label(r["emotion"]), folder))
    megc = megc2019_space(sorted({s.label for s in samples}))
    four = LabelSpace({lab: "others" if lab == "others" else cls for lab, cls in megc.items()},
                      unknown=megc.unknown)
    return ReleaseDataset(samples, NAME, errata=applied, root=base, layout=template,
                          annotation=path, label_spaces={"4class": four, "megc2019": megc},
                          classes={"4class": FOUR_CLASSES, "megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, CASME3A, description="CAS(ME)^3 Part A micro-expressions (release folder)",
             ids=IdSpelling(subject="spNO.{:d}", aliases=("cas(me)^3",)))
