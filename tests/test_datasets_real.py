"""Dataset plugins on the real released annotation files, with frame trees built in tmp.

The annotation files are read from shared/realdata (never copied into the repository); the
frame folders are generated: tiny 32x32 JPEGs for the onset, apex and offset frames, or empty
clip folders where only the listing matters. Counts are those of the released files
(checked by hand with openpyxl/csv one-off scripts).
"""
from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

import merbench
from merbench.annotations import sample_id
from merbench.errors import ConfigError, DataError

from .conftest import REALDATA as REAL  # noqa: E402 - ../shared/realdata or MERBENCH_REALDATA
ANN = REAL / "annotations"
pytestmark = pytest.mark.skipif(not ANN.is_dir(), reason=f"real annotation files absent ({ANN})")

MEGC_NAMES = {"0": "negative", "1": "positive", "2": "surprise"}


def jpeg(value: int = 128) -> bytes:
    # 32x32: the smallest frames `merbench data check` accepts as face video
    return cv2.imencode(".jpg", np.full((32, 32, 3), value, np.uint8))[1].tobytes()


def write_frames(folder: Path, numbers: list[int], pattern: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (folder / pattern.format(n)).write_bytes(jpeg(n % 256))


def xlsx_rows(path: Path, sheet: str, header_row: int) -> list[tuple]:
    ws = openpyxl.load_workbook(path, read_only=True, data_only=True)[sheet]
    return [r for r in ws.iter_rows(min_row=header_row + 1, values_only=True) if r[0] is not None]


# ----------------------------------------------------------------------------- trees

@pytest.fixture(scope="module")
def casme2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("casme2")
    shutil.copy(ANN / "casme2" / "CASME2-coding-20140508.xlsx", root)
    for r in xlsx_rows(root / "CASME2-coding-20140508.xlsx", "Sheet1", 1):
        numbers = [n for n in (r[3], r[4], r[5]) if isinstance(n, int)]
        write_frames(root / "CASME2_RAW_selected" / f"sub{r[0]}" / r[1], numbers, "img{}.jpg")
    return root


@pytest.fixture(scope="module")
def samm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samm")
    shutil.copy(ANN / "samm" / "SAMM_Micro_FACS_Codes_v2.xlsx", root)
    for r in xlsx_rows(root / "SAMM_Micro_FACS_Codes_v2.xlsx", "MICRO_ONLY", 14):
        write_frames(root / "SAMM" / r[0] / r[1], [r[3], r[5]], f"{r[0]}_{{:05d}}.jpg")
    return root


@pytest.fixture(scope="module")
def smic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMIC-HS folders spelled as released (s1/…/s1_ne_01), from the 164-clip list; frames
    only for the two clips the SMIC-E sheet lacks (their onset/offset come from the folder)."""
    root = tmp_path_factory.mktemp("smic")
    names = {"1": "positive", "2": "negative", "3": "surprise"}
    with open(ANN / "smic" / "smic-3classes.csv", newline="") as fh:
        for subject, clip, onset, _apex, offset, label in csv.reader(fh):
            short = f"s{int(subject[1:])}"
            folder = root / "HS" / short / "micro" / names[label] / clip.replace(subject, short, 1)
            folder.mkdir(parents=True)
            if clip == "s01_ne_02":
                write_frames(folder, list(range(int(onset), int(offset) + 1)), "image{}.bmp")
            elif clip == "s02_sur_05":  # a gap: frames onset+1..offset-1 lost
                write_frames(folder, [int(onset), int(offset)], "image{}.bmp")
    return root


def release(tmp_path: Path, name: str, files: list[Path], tops: list[str]) -> Path:
    root = tmp_path / name
    root.mkdir()
    for top in tops:
        (root / top).mkdir(parents=True)
    for f in files:
        shutil.copy(f, root / f.name)
    return root


# ----------------------------------------------------------------------------- CASME II

def test_casme2_counts(casme2_root: Path) -> None:
    ds = merbench.dataset("casme2", root=str(casme2_root))
    assert (len(ds), len(ds.subjects())) == (255, 26)
    assert ds.subjects()[:2] == ["sub01", "sub02"] and all(len(s) == 5 for s in ds.subjects())
    assert ds.summary("5class") == {"samples": 246, "subjects": 26, "classes": {
        "happiness": 32, "surprise": 25, "disgust": 63, "repression": 27, "others": 99},
        "left_out": {"fear": 2, "sadness": 7}, "unknown": {}}
    assert ds.classes("megc2019") == ["negative", "positive", "surprise"]
    assert ds.summary("megc2019")["classes"] == {"negative": 90, "positive": 32, "surprise": 25}
    assert "objective" not in ds.label_spaces  # only the 2019 file has objective classes


def test_casme2_errata(casme2_root: Path) -> None:
    ds = merbench.dataset("casme2", root=str(casme2_root))
    by_id = {s.id: s for s in ds.samples}
    s = by_id["casme2/sub04/EP12_01f"]
    assert (s.onset, s.apex, s.offset) == (261, 294, 321) and dict(s.meta)["errata"] == "apex"
    assert by_id["casme2/sub16/EP01_08"].offset == 96
    errata = {(e.sample_id, e.field): e for e in ds.errata}
    assert set(errata) == {("casme2/sub04/EP12_01f", "apex"), ("casme2/sub16/EP01_08", "offset")}
    assert errata["casme2/sub04/EP12_01f", "apex"].old == "/" and errata[
        "casme2/sub04/EP12_01f", "apex"].note
    assert all(s.onset <= s.apex <= s.offset for s in ds.samples)


def test_casme2_2019_file_objective_classes(casme2_root: Path, tmp_path: Path) -> None:
    root = release(tmp_path, "c2019", [ANN / "casme2" / "CASME2-coding-20190701.xlsx"],
                   ["CASME2_RAW_selected"])
    ds = merbench.dataset("casme2", root=str(root))
    assert ds.annotation.name == "CASME2-coding-20190701.xlsx"
    assert ds.summary("objective")["classes"] == {"I": 30, "II": 18, "III": 93, "IV": 15,
                                                  "V": 18, "VI": 2, "VII": 79}
    assert ds.summary()["classes"]["surprise"] == 28  # three sub24 'sadness' became surprise
    assert [s.label for s in ds.labelled("objective")][:2] == ["I", "VII"]
    assert len(ds.errata) == 2  # the same id-keyed errata apply to the 2019 file


def test_casme2_cropped_variant_and_wrong_roots(casme2_root: Path, tmp_path: Path) -> None:
    ds = merbench.dataset("casme2", root=str(casme2_root), variant="cropped",
                          require_frames=False)
    assert ds.samples[0].path.endswith("Cropped/sub01/EP02_01f")
    with pytest.raises(DataError, match=r"casme2: no Cropped/ in .*CASME2-coding-20140508"):
        merbench.dataset("casme2", root=str(casme2_root), variant="cropped")
    with pytest.raises(DataError, match=r"casme2: no CASME2-coding-20140508.xlsx or "
                                        r"CASME2-coding-\*.xlsx in .*expected the release root "
                                        r"that holds it and CASME2_RAW_selected/"):
        merbench.dataset("casme2", root=str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown field \{subj\}"):
        merbench.dataset("casme2", root=str(casme2_root), layout="X/{subj}/{clip}")
    with pytest.raises(ConfigError, match="variant"):
        merbench.dataset("casme2", root=str(casme2_root), variant="raw2")


def test_casme2_load_and_check(casme2_root: Path) -> None:
    ds = merbench.dataset("casme2", root=str(casme2_root))
    by_id = {s.id: s for s in ds.samples}
    s = by_id["casme2/sub01/EP02_01f"]  # 46, 59, 86
    folder = Path(s.path)
    write_frames(folder, list(range(1, 120)), "img{}.jpg")  # more than onset..offset
    clip = ds.load(s)
    assert (clip.n_frames, clip.apex, clip.frame_numbers[0]) == (41, 13, 46)
    assert abs(int(clip.frames[13].mean()) - 59) <= 1  # frame 59, matched by its number
    assert ds.check(s) == []
    (folder / "img60.jpg").unlink()
    problems = ds.check(s)
    assert len(problems) == 1 and problems[0].startswith("casme2/sub01/EP02_01f:")
    assert "frame(s) missing" in problems[0] and "60" in problems[0]
    gone = by_id["casme2/sub26/EP18_51"]
    shutil.rmtree(gone.path)
    problems = ds.check(gone)
    assert problems and problems[0].startswith("casme2/sub26/EP18_51: clip folder")


# ----------------------------------------------------------------------------- SAMM

def test_samm_counts_and_errata(samm_root: Path) -> None:
    ds = merbench.dataset("samm", root=str(samm_root))
    assert (len(ds), len(ds.subjects())) == (159, 29)
    assert ds.subjects()[0] == "006"
    assert ds.summary("5class")["samples"] == 136
    assert ds.summary("5class")["classes"] == {"anger": 57, "contempt": 12, "happiness": 26,
                                               "surprise": 15, "other": 26}
    assert ds.summary("objective")["classes"]["VII"] == 84
    by_id = {s.id: s for s in ds.samples}
    assert by_id["samm/028/028_4_1"].apex == 1088 and by_id["samm/032/032_3_1"].apex == 4937
    assert sorted(e.sample_id for e in ds.errata) == ["samm/028/028_4_1", "samm/032/032_3_1"]
    assert all(s.onset <= s.apex <= s.offset for s in ds.samples)
    assert by_id["samm/006/006_1_2"].path.endswith("SAMM/006/006_1_2")


def test_samm_wrong_root(tmp_path: Path) -> None:
    root = release(tmp_path, "samm", [ANN / "samm" / "SAMM_Micro_FACS_Codes_v2.xlsx"], [])
    with pytest.raises(DataError, match=r"samm: no SAMM/ in .*holds SAMM_Micro_FACS_Codes_v2"):
        merbench.dataset("samm", root=str(root))
    assert len(merbench.dataset("samm", root=str(root), require_frames=False)) == 159


# ----------------------------------------------------------------------------- SMIC

def test_smic_counts_and_onsets(smic_root: Path) -> None:
    ds = merbench.dataset("smic", root=str(smic_root))  # no annotation: onsets from frames
    assert (len(ds), len(ds.subjects())) == (164, 16)
    assert ds.summary("megc2019")["classes"] == {"negative": 70, "positive": 51, "surprise": 43}
    by_id = {s.id: s for s in ds.samples}
    s = by_id["smic/s01/s01_ne_02"]
    assert (s.onset, s.apex, s.offset, s.apex_estimated) == (563854, None, 563885, True)
    clip = ds.load(s)
    # no apex: the lower middle of 32 frames, the same rule as Clip.from_array / resolve_apex
    assert (clip.n_frames, clip.apex, clip.apex_estimated) == (32, 15, True)
    problems = ds.check(by_id["smic/s02/s02_sur_05"])
    assert len(problems) == 1 and problems[0].startswith("smic/s02/s02_sur_05: ")
    assert "frame(s) missing" in problems[0]
    shutil.copy(ANN / "smic" / "SMIC-HS-E_annotation.xlsx", smic_root)
    try:
        ds = merbench.dataset("smic", root=str(smic_root), variant="HS")
    finally:
        (smic_root / "SMIC-HS-E_annotation.xlsx").unlink()
    by_id = {s.id: s for s in ds.samples}
    assert (by_id["smic/s03/s03_sur_01"].onset, by_id["smic/s03/s03_sur_01"].offset) == (
        308860, 308889)
    assert by_id["smic/s20/s20_ne_01"].offset == 17581055  # a formula cell's cached value
    assert by_id["smic/s18/s18_sur_03"].label == "surprise"  # from the folder, not the sheet
    sources = Counter(dict(s.meta)["onset_offset_from"] for s in ds.samples)
    assert sources == {"SMIC-HS-E_annotation.xlsx": 162, "frames": 2}


def test_smic_vis_and_nir(tmp_path: Path) -> None:
    """VIS/NIR trees from the SMIC-E VIS sheet: VIS takes its onsets from that sheet, NIR
    (no sheet) from the frames in its folders."""
    shutil.copy(ANN / "smic" / "SMIC-HS-E_annotation.xlsx", tmp_path)
    for r in xlsx_rows(tmp_path / "SMIC-HS-E_annotation.xlsx", "VIS", 1):
        for variant in ("VIS", "NIR"):
            folder = tmp_path / variant / f"s{r[0]}" / "micro" / r[12] / r[1]
            write_frames(folder, [r[3] - 1, r[4] + 1], "image{:06d}.jpg")
    vis = merbench.dataset("smic", root=str(tmp_path), variant="VIS")
    assert (len(vis), len(vis.subjects())) == (71, 8)
    assert vis.summary()["classes"] == {"negative": 24, "positive": 28, "surprise": 19}
    s = {s.id: s for s in vis.samples}["smic/s20/s20_ne_01"]
    assert (s.onset, s.offset, s.path.split("/")[-5]) == (7750, 7754, "VIS")
    nir = merbench.dataset("smic", root=str(tmp_path), variant="NIR")
    s = {s.id: s for s in nir.samples}["smic/s20/s20_ne_01"]
    assert (len(nir), s.onset, s.offset, dict(s.meta)["onset_offset_from"]) == (
        71, 7749, 7755, "frames")


def test_smic_wrong_root(smic_root: Path) -> None:
    with pytest.raises(DataError, match=r"smic: no VIS/ in .*holds VIS/s1/micro/negative"):
        merbench.dataset("smic", root=str(smic_root), variant="VIS")
    with pytest.raises(DataError, match="smic: no HS/"):
        merbench.dataset("smic", root=str(smic_root / "HS"))


# ----------------------------------------------------------------------------- MEGC2019

def test_megc2019_list_is_in_each_space(casme2_root: Path, samm_root: Path,
                                        smic_root: Path) -> None:
    with open(REAL / "protocols" / "combined_3class_gt.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len({(r[0], r[1]) for r in rows}) == 68
    spaces = {}
    for name, root in (("casme2", casme2_root), ("samm", samm_root), ("smic", smic_root)):
        spaces[name] = {s.id: s.label for s in merbench.dataset(name, root=str(root))
                        .labelled("megc2019")}
    listed: dict[str, Counter] = {n: Counter() for n in spaces}
    for dataset, subject, clip, code in rows:
        sid = sample_id(dataset, subject, clip)
        assert spaces[dataset].get(sid) == MEGC_NAMES[code], sid
        listed[dataset][MEGC_NAMES[code]] += 1
    assert listed["smic"] == {"negative": 70, "positive": 51, "surprise": 43}
    assert listed["casme2"] == {"negative": 88, "positive": 32, "surprise": 25}
    assert listed["samm"] == {"negative": 92, "positive": 26, "surprise": 15}
    assert (len(spaces["smic"]), len(spaces["casme2"]), len(spaces["samm"])) == (164, 147, 133)


# ----------------------------------------------------------------------------- CAS(ME)^2

def test_casme_sq_counts_and_errata(tmp_path: Path) -> None:
    root = release(tmp_path, "casme_sq", [ANN / "casme_sq" / "CAS(ME)^2code_final(Updated).csv"],
                   ["rawpic"])
    ds = merbench.dataset("casme_sq", root=str(root))
    assert (len(ds), len(ds.subjects())) == (57, 14)
    assert ds.summary()["classes"] == {"negative": 21, "others": 19, "positive": 8, "surprise": 9}
    assert ds.summary("megc2019")["samples"] == 38 and ds.errata == ()
    s = ds.samples[0]
    assert (s.id, s.onset, s.apex, s.offset) == ("casme_sq/s15/disgust2_3", 699, 703, 707)
    assert s.path.endswith("rawpic/s15/15_0102eatingworms")
    macro = merbench.dataset("casme_sq", root=str(root), expressions="macro")
    assert (len(macro), len(macro.subjects())) == (300, 20)
    fields = Counter(e.field for e in macro.errata)
    assert fields == {"offset": 44, "apex": 4}
    by_id = {s.id: s for s in macro.samples}
    assert (by_id["casme_sq/s15/anger2_1"].offset, by_id["casme_sq/s15/anger2_1"].apex) == (
        2163, 2163)  # offset 0 = not annotated: the clip ends at the apex
    assert by_id["casme_sq/s34/anger1_1"].apex is None  # apex 0 = not annotated
    assert by_id["casme_sq/s27/disgust1_5"].apex_estimated  # apex 1230 after offset 1224
    assert len(merbench.dataset("casme_sq", root=str(root), expressions="all")) == 357


# ----------------------------------------------------------------------------- CAS(ME)^3

def test_casme3a_counts_errata_and_load(tmp_path: Path) -> None:
    root = tmp_path / "part_A"
    (root / "annotation").mkdir(parents=True)
    shutil.copy(ANN / "casme3" / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", root / "annotation")
    with pytest.raises(DataError, match=r"casme3a: no Part_A_ME_clip/frame/ or "):
        merbench.dataset("casme3a", root=str(root))
    write_frames(root / "Part_A_ME_clip" / "frame" / "spNO.14_J_1012", list(range(1012, 1039)),
                 "{}.jpg")  # the folder spelled as in the file's row
    ds = merbench.dataset("casme3a", root=str(root))
    assert (len(ds), len(ds.subjects())) == (860, 94)
    assert ds.summary()["classes"] == {"anger": 64, "disgust": 250, "fear": 86, "happy": 55,
                                       "others": 161, "sad": 57, "surprise": 187}
    assert ds.summary("4class")["classes"] == {"negative": 457, "positive": 55,
                                               "surprise": 187, "others": 161}
    assert ds.summary("megc2019")["samples"] == 699
    assert ds.summary("objective")["classes"]["VII"] == 373
    assert sorted((e.sample_id, e.field) for e in ds.errata) == [
        ("casme3a/spNO.14/J_1012", "file"), ("casme3a/spNO.168/a_4", "emotion"),
        ("casme3a/spNO.194/a_561", "emotion"), ("casme3a/spNO.194/a_7", "emotion")]
    s = {s.id: s for s in ds.samples}["casme3a/spNO.14/j_1012"]
    assert Path(s.path).name == "spNO.14_J_1012"  # found case-insensitively
    assert (ds.load(s).n_frames, ds.load(s).apex) == (27, 7)


# ----------------------------------------------------------------------------- MMEW

def test_mmew_counts(tmp_path: Path) -> None:
    root = release(tmp_path, "mmew", [ANN / "mmew" / "MMEW_Micro_Exp_delete_others.csv"],
                   ["Micro_Expression"])
    ds = merbench.dataset("mmew", root=str(root))
    assert (len(ds), len(ds.subjects())) == (234, 30)
    assert ds.subjects()[0] == "S01"
    assert ds.summary()["classes"] == {"anger": 8, "disgust": 72, "fear": 16, "happiness": 36,
                                       "sadness": 13, "surprise": 89}
    assert ds.summary("megc2019")["classes"] == {"negative": 109, "positive": 36, "surprise": 89}
    assert ds.samples[0].path.endswith("Micro_Expression/happiness/S01-01-001")
    with pytest.raises(DataError, match="mmew: no Micro_Expression/"):
        merbench.dataset("mmew", root=str(root / "Micro_Expression"), annotation=str(
            root / "MMEW_Micro_Exp_delete_others.csv"))


# ----------------------------------------------------------------------------- the data CLI

def test_cli_data_summary_errata_and_check(casme2_root: Path, samm_root: Path, smic_root: Path,
                                           cli) -> None:
    import json

    res = cli("data", "summary", "casme2", "--root", casme2_root, "--labels", "5class", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out) == {"samples": 246, "subjects": 26, "classes": {
        "happiness": 32, "surprise": 25, "disgust": 63, "repression": 27, "others": 99},
        "left_out": {"fear": 2, "sadness": 7}, "unknown": {}}

    res = cli("data", "summary", "--protocol", "megc2019-composite", "--json",
              "--data-root", f"casme2={casme2_root}", "--data-root", f"samm={samm_root}",
              "--data-root", f"smic={smic_root}")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert (summary["samples"], summary["subjects"]) == (442, 68)
    assert summary["classes"] == {"negative": 250, "positive": 109, "surprise": 83}
    assert summary["datasets"]["samm"] == {"samples": 133, "subjects": 28, "classes": {
        "negative": 92, "positive": 26, "surprise": 15}}

    res = cli("data", "errata", "casme2", "--root", casme2_root)
    assert res.code == 0 and "casme2/sub04/EP12_01f: apex '/' -> 294" in res.out

    # the tree holds only the onset, apex and offset frames: every clip misses frames
    res = cli("data", "check", "casme2", "--root", casme2_root)
    assert res.code != 0
    assert "problem: casme2/sub01/EP02_01f" in res.out
    assert len(res.err.strip().splitlines()) == 1 and "problem(s) found" in res.err

    res = cli("data", "summary", "casme2", "--root", casme2_root / "CASME2_RAW_selected")
    assert res.code != 0 and "CASME2-coding" in res.err and len(res.err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- every release

@pytest.mark.parametrize("name, folder, left_out", [
    ("casme2", "casme2", {"5class": {"fear": 2, "sadness": 7},
                          "megc2019": {"others": 99, "fear": 2, "sadness": 7}}),
    ("samm", "samm", {"5class": {"disgust": 9, "fear": 8, "sadness": 6},
                      "megc2019": {"other": 26}}),
    ("casme3a", "casme3", {"megc2019": {"others": 161}}),
    ("mmew", "mmew", {}),
    ("casme_sq", "casme_sq", {"megc2019": {"others": 19}}),
])
def test_real_releases_have_no_duplicate_rows_and_drop_only_declared_labels(
        name: str, folder: str, left_out: dict) -> None:
    """Opening succeeds (duplicate rows would be a DataError naming both rows); every label a
    space leaves out is one it leaves out on purpose (none unknown), with the counts above."""
    ds = merbench.dataset(name, root=str(ANN / folder), require_frames=False)
    assert ds.label_problems() == []
    got = {space: {label: len(ids) for label, ids in ds.dropped(space).items()}
           for space in ds.label_spaces}
    assert {space: counts for space, counts in got.items() if counts} == left_out
    assert all(not ds.unknown_labels(space) for space in ds.label_spaces)


def test_casme2_5class_is_246_and_the_protocol_list_adds_one_clip_the_file_lacks() -> None:
    """casme2-5classes.csv lists 247 samples; the 2014 coding file has 246 of them in 5
    classes (255 less fear 2 and sadness 7): sub24/EP02_07 is in no release coding file."""
    ds = merbench.dataset("casme2", root=str(ANN / "casme2"), require_frames=False)
    ours = {s.id for s in ds.labelled("5class")}
    with open(REAL / "protocols" / "casme2-5classes.csv", newline="") as fh:
        listed = {sample_id("casme2", r[0], r[1]) for r in csv.reader(fh)}
    assert (len(ours), len(listed)) == (246, 247)
    assert listed - ours == {"casme2/sub24/EP02_07"} and ours <= listed
