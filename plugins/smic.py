"""SMIC (Li et al. 2013): spontaneous micro-expressions, 3 classes; HS 164 clips of 16 subjects
(100 fps), VIS and NIR 71 clips of 8 subjects (25 fps).

Release layout (``root`` is the folder that holds HS/, VIS/, NIR/)::

    HS/s1/micro/negative/s1_ne_01/image106020.bmp      variant="HS" (default)
    VIS/s1/micro/positive/s1_po_01/...                variant="VIS"
    NIR/s1/micro/surprise/s1_sur_01/...               variant="NIR"

The folders are the listing: every clip folder is a sample, labelled by its emotion folder
(``layout=`` overrides the template; its fields are {subject}, {emotion}, {clip}). Subjects
and clips are spelled ``s01`` / ``s01_ne_01``. SMIC annotates no apex: the middle frame is used
(apex_estimated=True). Onset/offset come from ``SMIC-HS-E_annotation.xlsx`` (the SMIC-E file;
sheet HS or VIS; its OffsetF cells are formulas, their cached values are read) when it is in
the root or given as ``annotation=``, for the clips it lists; otherwise from the first and last
frame in the clip's folder. NIR has no sheet (its frame numbers are not those of VIS). The
SMIC-E sheet lacks s01_ne_02 and s02_sur_05, and calls s18_sur_03 'negative' (its folder
and the MEGC2019 list say surprise): labels come from the folders.

Label spaces: ``native`` (negative, positive, surprise) and the identical ``megc2019``.
"""
from __future__ import annotations

from typing import Any

from merbench import hookimpl
from merbench.annotations import (MEGC2019_CLASSES, ReleaseDataset, check_template,
                                  clip_id, discover, find_file, frame_number, megc2019_space,
                                  native_label, read_table, release_root, sheet_names,
                                  subject_id, template_top, unique_records)
from merbench.errors import ConfigError, DataError
from merbench.types import Sample
from merbench.video import index_frames
from merbench.ids import IdSpelling

NAME = "smic"
VARIANTS = ("HS", "VIS", "NIR")
COLUMNS = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("OnsetF",),
           "offset": ("OffsetF",)}


def _annotated(path: Any, variant: str) -> dict[str, tuple[int, int]]:
    """clip id -> (onset, offset) from the SMIC-E sheet of this variant (none for NIR)."""
    if variant not in sheet_names(path):
        return {}
    out = {}
    records = read_table(path, COLUMNS, sheet=variant, where=f"{NAME}: {path.name}")
    for r in unique_records(records, lambda r: clip_id(NAME, r["clip"])).values():
        clip = clip_id(NAME, r["clip"])
        where = f"{NAME}/{subject_id(NAME, r['subject'])}/{clip} ({path.name} row {r['_row']})"
        out[clip] = (frame_number(r["onset"], where, "onset"),
                     frame_number(r["offset"], where, "offset"))
    return out


def SMIC(root: Any, variant: str = "HS", layout: str | None = None,
         annotation: str | None = None) -> ReleaseDataset:
    """SMIC clips found in the release folders (``variant`` HS | VIS | NIR)."""
    if variant not in VARIANTS:
        raise ConfigError(f"smic: unknown variant {variant!r}", "use HS, VIS or NIR")
    base = release_root(NAME, root)
    template = check_template(NAME, layout or f"{variant}/{{subject}}/micro/{{emotion}}/{{clip}}",
                              ("subject", "emotion", "clip"))
    top = template_top(template)
    if top and not (base / top).is_dir():
        raise DataError(f"smic: no {top}/ in {base}; expected the SMIC release root that holds "
                        f"{top}/s1/micro/negative/s1_ne_01/",
                        "pass the folder that holds HS/ (VIS/, NIR/), or layout=")
    found = discover(base, template)
    if not found:
        raise DataError(f"smic: no clip folders match {template!r} under {base}",
                        "pass the SMIC release root, or layout= with its folder template")
    path = find_file(NAME, base, ("SMIC-*E_annotation*.xlsx", "SMIC*annotation*.xlsx"), "",
                     annotation, required=False)
    frames_of = _annotated(path, variant) if path is not None else {}
    samples = []
    for folder, fields in found:
        clip = clip_id(NAME, fields["clip"])
        subject = subject_id(NAME, fields.get("subject") or clip.split("_")[0])
        if clip in frames_of:
            (onset, offset), source = frames_of[clip], path.name  # type: ignore[union-attr]
        else:
            numbers = sorted(index_frames(folder))
            onset, offset = (numbers[0], numbers[-1]) if numbers else (None, None)
            source = "frames"
        samples.append(Sample(dataset=NAME, subject=subject, clip=clip,
                              label=native_label(fields["emotion"]), onset=onset, apex=None,
                              offset=offset, apex_estimated=True, path=str(folder),
                              meta=(("onset_offset_from", source),)))
    labels = sorted({s.label for s in samples})
    return ReleaseDataset(samples, NAME, root=base, layout=template, annotation=path,
                          label_spaces={"megc2019": megc2019_space(labels)},
                          classes={"megc2019": MEGC2019_CLASSES})


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register(NAME, SMIC, description="SMIC HS/VIS/NIR (release folders; labels from folder names)",
             ids=IdSpelling(subject="s{:02d}", clip_has_subject=True,
                            aliases=("smic-hs", "smic_hs")))
