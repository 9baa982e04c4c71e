"""SAMM (Davison et al. 2016): 159 spontaneous micro-movements of 29 subjects, 200 fps.

Release layout (``root`` is the folder that holds both)::

    SAMM_Micro_FACS_Codes_v2.xlsx      sheet MICRO_ONLY, header on row 14
    SAMM/006/006_1_2/006_05562.jpg     frame 5562 of clip 006_1_2 (``layout=`` overrides)

Subjects are spelled ``006`` whatever the file writes. Label spaces: ``native`` (anger,
contempt, disgust, fear, happiness, other, sadness, surprise); ``5class`` (anger, contempt,
happiness, surprise, other); ``megc2019`` (negative = anger, contempt, disgust, fear, sadness;
positive = happiness; surprise); ``objective`` (classes I-VII of Davison et al. 2018).
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, ReleaseDataset, megc2019_space,
                                  open_release, release_samples, subset_space)
from merbench.datasets import Erratum
from merbench.ids import IdSpelling

NAME = "samm"
FIVE_CLASSES = ("anger", "contempt", "happiness", "surprise", "other")
LAYOUT = "SAMM/{subject}/{clip}"
COLUMNS = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("Onset Frame",),
           "apex": ("Apex Frame",), "offset": ("Offset Frame",), "au": ("Action Units",),
           "emotion": ("Estimated Emotion",), "objective": ("Objective Classes",)}

ERRATA = (
    Erratum("samm/028/028_4_1", "apex", 1143, 1088,
            "apex 1143 is after offset 1134 in SAMM_Micro_FACS_Codes_v2.xlsx; 1088 as in the "
            "samm-5classes.csv protocol list"),
    Erratum("samm/032/032_3_1", "apex", 1930, 4937,
            "apex 1930 is before onset 4896 in SAMM_Micro_FACS_Codes_v2.xlsx; 4937 as in the "
            "samm-5classes.csv protocol list"),
)


def SAMM(root: Any, layout: str | None = None, annotation: str | None = None,
         require_frames: bool = True) -> ReleaseDataset:
    """SAMM micro-movements from the release folder (``layout`` overrides the frame folders)."""
    base, path, template, records = open_release(
        NAME, root, patterns=("SAMM_Micro_FACS_Codes*.xlsx",),
        expected="the release root that holds it and SAMM/", layouts=(LAYOUT,),
        fields=("subject", "clip"), columns=COLUMNS, annotation=annotation, layout=layout,
        require_frames=require_frames, optional=("objective", "au"))
    samples, applied = release_samples(NAME, records, ERRATA, base, template)
    labels = sorted({s.label for s in samples})
    return ReleaseDataset(
        samples, NAME, errata=applied, root=base, layout=template, annotation=path,
        label_spaces={"5class": subset_space(labels, FIVE_CLASSES,
                                             drop=("disgust", "fear", "sadness")),
                      "megc2019": megc2019_space(labels)},
        classes={"5class": FIVE_CLASSES, "megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, SAMM, description="SAMM micro-movements (release folder)",
             ids=IdSpelling(subject="{:03d}", clip_has_subject=True))
