"""CASME II (Yan et al. 2014): 255 spontaneous micro-expressions of 26 subjects, 200 fps.

Release layout (``root`` is the folder that holds both)::

    CASME2-coding-20140508.xlsx            (or the 2019 CASME2-coding-20190701.xlsx)
    CASME2_RAW_selected/sub01/EP02_01f/img46.jpg    variant="raw" (default)
    Cropped/sub01/EP02_01f/reg_img46.jpg            variant="cropped" (the official crops)

With both coding files present the 2014 one is read (the counts every paper reports and the
MEGC2019 list come from it); ``annotation=`` picks another. Only the 2019 file has objective
classes (label space ``objective``). Frames are matched by the number in the file name.

Label spaces: ``native`` (happiness, surprise, disgust, repression, others, sadness, fear);
``5class`` (happiness, surprise, disgust, repression, others; sadness and fear dropped);
``megc2019`` (negative = disgust + repression, positive = happiness, surprise). MEGC2019 built
its CASME II part from the 5-class labels, so fear and sadness are not in it: the official list
has 88 negatives = 90 disgust/repression less sub04/EP12_01f and sub05/EP09_05f (apex = onset),
which the list excludes and this space keeps.
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, ReleaseDataset, megc2019_space,
                                  open_release, release_samples, subset_space)
from merbench.datasets import Erratum
from merbench.errors import ConfigError
from merbench.ids import IdSpelling

NAME = "casme2"
FIVE_CLASSES = ("happiness", "surprise", "disgust", "repression", "others")
LAYOUTS = {"raw": "CASME2_RAW_selected/{subject}/{clip}", "cropped": "Cropped/{subject}/{clip}"}
COLUMNS = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("OnsetFrame",),
           "apex": ("ApexFrame",), "offset": ("OffsetFrame",), "au": ("Action Units",),
           "emotion": ("Estimated Emotion",), "objective": ("Objective Classes",)}

ERRATA = (
    Erratum("casme2/sub04/EP12_01f", "apex", "/", 294,
            "ApexFrame is '/' (not given) in CASME2-coding-20140508 and -20190701.xlsx; 294 as "
            "in the casme2-5classes.csv protocol list"),
    Erratum("casme2/sub16/EP01_08", "offset", 110, 96,
            "frames 97-110 are not in the released clip folder (73-96 only, reported by users); "
            "the casme2-5classes.csv protocol list ends the clip at 96"),
)


def CASME2(root: Any, variant: str = "raw", layout: str | None = None,
           annotation: str | None = None, require_frames: bool = True) -> ReleaseDataset:
    """CASME II from its release folder (``variant`` raw | cropped; ``layout`` overrides)."""
    if variant not in LAYOUTS:
        raise ConfigError(f"casme2: unknown variant {variant!r}", "use raw or cropped")
    base, path, template, records = open_release(
        NAME, root, patterns=("CASME2-coding-20140508.xlsx", "CASME2-coding-*.xlsx"),
        expected=f"the release root that holds it and {LAYOUTS[variant].split('/')[0]}/",
        layouts=(LAYOUTS[variant],), fields=("subject", "clip"), columns=COLUMNS,
        annotation=annotation, layout=layout, require_frames=require_frames,
        optional=("objective", "au"))
    samples, applied = release_samples(NAME, records, ERRATA, base, template)
    labels = sorted({s.label for s in samples})
    return ReleaseDataset(
        samples, NAME, errata=applied, root=base, layout=template, annotation=path,
        label_spaces={"5class": subset_space(labels, FIVE_CLASSES, drop=("fear", "sadness")),
                      "megc2019": megc2019_space(labels, drop=("fear", "sadness"))},
        classes={"5class": FIVE_CLASSES, "megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, CASME2, description="CASME II (release folder; raw or cropped frames)",
             ids=IdSpelling(subject="sub{:02d}", aliases=("casmeii", "casme_2", "casme-2")))
