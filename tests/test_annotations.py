"""Shared dataset-plugin code: ids, tables, errata, label spaces, layouts."""
from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from merbench.annotations import (apply_errata, check_template, clip_id, discover, find_file,
                                  frame_number, megc2019_space, objective_class, read_table,
                                  sample_id, subject_id, subset_space, template_top)
from merbench.datasets import Erratum
from merbench.errors import ConfigError, DataError


@pytest.mark.parametrize("dataset, raw, want", [
    ("casme2", "01", "sub01"), ("casme2", 4, "sub04"), ("casme2", "sub7", "sub07"),
    ("samm", 6, "006"), ("samm", "6.0", "006"), ("samm", 6.0, "006"), ("samm", "037", "037"),
    ("smic", "s1", "s01"), ("smic", 20, "s20"), ("casme_sq", "15", "s15"),
    ("casme_sq", "s15", "s15"), ("casme3a", "spNO.1", "spNO.1"), ("casme3a", "spno.07", "spNO.7"),
    ("casme3a", 216, "spNO.216"), ("mmew", 1, "S01"), ("mmew", "S30", "S30")])
def test_subject_spellings(dataset: str, raw: object, want: str) -> None:
    assert subject_id(dataset, raw) == want


def test_clip_spellings() -> None:
    assert clip_id("smic", "s1_ne_01") == "s01_ne_01"
    assert clip_id("samm", "6_1_2") == "006_1_2"
    assert clip_id("casme2", " EP02_01f ") == "EP02_01f"
    assert sample_id("samm", "6", "006_1_2") == "samm/006/006_1_2"


def test_read_table_finds_the_header_below_a_preamble(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = "MICRO_ONLY"
    ws.append(["SAMM Dataset - Master FACS Codes"])
    ws.append([])
    ws.append(["Subject", "Filename", "Onset  Frame", "Estimated emotion"])
    ws.append(["006", "006_1_2", 5562, "Anger"])
    ws.append([None, None, None, None])
    ws.append([7, "007_3_1", 10.0, "Happiness"])
    book.save(tmp_path / "t.xlsx")
    cols = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("Onset Frame",),
            "emotion": ("Estimated Emotion",), "objective": ("Objective Classes",)}
    rows = read_table(tmp_path / "t.xlsx", cols, optional=("objective",), sheet="MICRO_ONLY")
    assert [(r["subject"], r["onset"], r["objective"], r["_row"]) for r in rows] == [
        ("006", 5562, None, 4), (7, 10.0, None, 6)]
    with pytest.raises(DataError, match=r"header row \(row 3\) of .*t.xlsx has no column 'Objective Classes'"):
        read_table(tmp_path / "t.xlsx", cols)
    with pytest.raises(DataError, match="has no sheet 'label'"):
        read_table(tmp_path / "t.xlsx", cols, sheet="label")


def test_read_table_positional_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("participant,clip,onset\n1,anger1_1,557\n\n2,happy1_1,138\n")
    rows = read_table(path, {}, positional=("participant", "clip", "onset"))
    assert [(r["clip"], r["onset"], r["_row"]) for r in rows] == [("anger1_1", "557", 2),
                                                                ("happy1_1", "138", 4)]
    path.write_text("1,anger1_1,557\n")
    assert len(read_table(path, {}, positional=("participant", "clip", "onset"))) == 1


def test_frame_numbers() -> None:
    assert [frame_number(v, "x", "onset") for v in (46, 46.0, " 46", "046")] == [46] * 4
    with pytest.raises(DataError, match=r"casme2/sub04/EP12_01f: apex '/' is not a frame number"):
        frame_number("/", "casme2/sub04/EP12_01f", "apex")
    with pytest.raises(DataError, match="formula saved without its value"):
        frame_number(None, "smic/s01/s01_ne_01", "offset")
    with pytest.raises(DataError):
        frame_number(4.5, "x", "apex")


def test_errata_match_id_and_old_value() -> None:
    records = [{"id": "a", "apex": "/", "offset": 9}, {"id": "b", "apex": 5, "offset": 9},
               {"id": "c", "apex": 1, "offset": 2}]
    errata = (Erratum("a", "apex", "/", 7, "no apex"),
              Erratum("b", "apex", 6, 8, "already corrected in this file version"),
              Erratum("c", "drop", None, None, "not a micro-expression"),
              Erratum("z", "apex", 1, 2, "no such sample"))
    fixed, applied = apply_errata(records, errata, lambda r: r["id"])
    assert [(r["id"], r["apex"], r["_errata"]) for r in fixed] == [("a", 7, ("apex",)),
                                                                   ("b", 5, ())]
    assert [e.sample_id for e in applied] == ["a", "c"]
    assert records[0]["apex"] == "/"  # the input is not changed


def test_label_spaces() -> None:
    labels = ["anger", "contempt", "disgust", "fear", "happiness", "other", "sadness",
              "surprise", "repression", "happy", "sad", "others"]
    space = megc2019_space(labels, drop=("fear",))
    assert [k for k, v in space.items() if v == "negative"] == [
        "anger", "contempt", "disgust", "sadness", "repression", "sad"]
    assert [k for k, v in space.items() if v is None] == ["fear", "other", "others"]
    assert space["happy"] == "positive" and space["surprise"] == "surprise"
    assert subset_space(["others", "fear", "disgust"], ("disgust", "others")) == {
        "others": "others", "fear": None, "disgust": "disgust"}
    assert [objective_class(v, "x") for v in (1, "3", "VII", "iv")] == ["I", "III", "VII", "IV"]
    with pytest.raises(DataError, match="objective class '8'"):
        objective_class(8, "x")


def test_templates_and_discovery(tmp_path: Path) -> None:
    for rel in ("HS/s1/micro/negative/s1_ne_01", "HS/s1/micro/surprise/s1_sur_02",
                "HS/s2/non_micro/s2_x", "HS/s3/micro/positive/s3_po_01"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "HS/s3/micro/positive/notes.txt").write_text("")
    found = discover(tmp_path, "HS/{subject}/micro/{emotion}/{clip}")
    assert [f for _, f in found] == [
        {"subject": "s1", "emotion": "negative", "clip": "s1_ne_01"},
        {"subject": "s1", "emotion": "surprise", "clip": "s1_sur_02"},
        {"subject": "s3", "emotion": "positive", "clip": "s3_po_01"}]
    assert template_top("CASME2_RAW_selected/{subject}/{clip}") == "CASME2_RAW_selected"
    assert template_top("Part_A_ME_clip/frame/{subject}_{file}") == "Part_A_ME_clip/frame"
    assert template_top("{subject}/{clip}") == ""
    with pytest.raises(ConfigError, match=r"uses unknown field \{video\}.*\{clip\}, \{subject\}"):
        check_template("casme2", "x/{video}", ("subject", "clip"))
    with pytest.raises(ConfigError, match="not a valid template"):
        check_template("casme2", "x/{subject", ("subject",))


def test_find_file_nearest_first(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "CASME2-coding-20140508.xlsx").write_text("")
    (tmp_path / "a" / "casme2-CODING-20190701.xlsx").write_text("")
    assert find_file("casme2", tmp_path, ("CASME2-coding-*.xlsx",), "").name == \
        "casme2-CODING-20190701.xlsx"
    assert find_file("casme2", tmp_path, ("CASME2-coding-20140508.xlsx",
                                          "CASME2-coding-*.xlsx"), "").parent.name == "b"
    assert find_file("casme2", tmp_path, ("x.xlsx",), "", required=False) is None
    with pytest.raises(DataError, match="annotation file .*nope.xlsx does not exist"):
        find_file("casme2", tmp_path, ("x.xlsx",), "", annotation="nope.xlsx")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_read_table_reads_csv_as_spreadsheets_save_it(tmp_path: Path, encoding: str) -> None:
    text = '"Subject","Filename","Onset Frame","Note"\r\n1,EP01,5,' + "x" * 150_000 + "\r\n"
    (tmp_path / "t.csv").write_bytes(text.encode(encoding))
    cols = {"subject": ("Subject",), "clip": ("Filename",), "onset": ("Onset Frame",)}
    rows = read_table(tmp_path / "t.csv", cols)
    assert [(r["subject"], r["clip"], r["onset"], r["_row"]) for r in rows] == [
        ("1", "EP01", "5", 2)]


def test_read_table_names_a_file_it_cannot_decode(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes("Subject,Filename\n1,Épisode\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"annotation file .*t.csv is not UTF-8 text"):
        read_table(tmp_path / "t.csv", {"subject": ("Subject",)})
