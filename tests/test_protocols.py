"""Protocols as data: shipped files, official sample lists, and deterministic fold construction."""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest

import merbench
from merbench.errors import DataError, ProtocolError, UnknownNameError
from merbench.protocols import KINDS, DatasetRef, Protocol, load_protocol, protocol_names
from merbench.types import Sample

SHIPPED = ["casme2-5class-loso", "casme2-holdout", "casme2-to-samm", "megc2019-composite",
           "megc2019-lodo", "samm-5class-loso", "samm-to-casme2", "smic-3class-loso",
           "synthetic-holdout", "synthetic-holdout-samples", "synthetic-loso"]
MEGC = ("negative", "positive", "surprise")


def _samples_from_truth(truth: dict[str, str]) -> list[Sample]:
    return [Sample(*sid.split("/"), label=label) for sid, label in truth.items()]


def _synthetic(subjects: int = 4, clips_per_class: int = 2) -> list[Sample]:
    proto = load_protocol("synthetic-loso")
    return proto.load_samples(dataset_params={"synthetic": {
        "subjects": subjects, "clips_per_class": clips_per_class}})


def _check_partition(folds, samples) -> None:
    ids = [s.id for s in samples]
    tested = [i for f in folds for i in f.test]
    assert sorted(tested) == sorted(ids)  # every sample tested exactly once
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert set(f.train) | set(f.test) == set(ids)


def test_every_shipped_protocol_loads() -> None:
    names = protocol_names()
    assert set(SHIPPED) <= set(names)
    datasets = set(merbench.names("dataset"))
    for name in names:
        proto = merbench.protocol(name)
        assert proto.name == name and proto.kind in KINDS and proto.classes
        assert {r.name for r in proto.datasets} <= datasets, name
        assert Path(proto.source).name == f"{name}.toml"


def test_megc2019_composite_official_list() -> None:
    proto = load_protocol("megc2019-composite")
    assert (proto.kind, proto.classes, proto.composite) == ("loso", MEGC, True)
    assert [r.name for r in proto.datasets] == ["smic", "casme2", "samm"]
    assert [r.labels for r in proto.datasets] == ["megc2019"] * 3
    truth = proto.ground_truth()
    assert len(truth) == 442
    assert len({sid.rsplit("/", 1)[0] for sid in truth}) == 68
    counts = Counter((sid.split("/")[0], label) for sid, label in truth.items())
    assert {d: tuple(counts[(d, c)] for c in MEGC) for d in ("smic", "casme2", "samm")} == {
        "smic": (70, 51, 43), "casme2": (88, 32, 25), "samm": (92, 26, 15)}
    assert sum(counts.values()) == 164 + 145 + 133
    # spellings of the official list are the database's own
    assert "smic/s01/s01_ne_01" in truth and "samm/006/006_1_2" in truth
    assert "casme2/sub01/EP02_01f" in truth


def test_megc2019_composite_loso_folds() -> None:
    proto = load_protocol("megc2019-composite")
    samples = _samples_from_truth(proto.ground_truth())
    random.Random(0).shuffle(samples)  # folds do not depend on the order samples come in
    folds = proto.folds(proto.select(samples))
    assert len(folds) == 68
    names = [f.name for f in folds]
    assert names[:3] == ["smic/s01", "smic/s02", "smic/s03"]  # protocol's dataset order first
    assert names[16] == "casme2/sub01" and names[40] == "samm/006"
    assert [f.index for f in folds] == list(range(68))
    _check_partition(folds, samples)
    assert len(next(f for f in folds if f.name == "casme2/sub01").test) == 3


def test_megc2019_lodo_and_cross_dataset_on_the_official_list() -> None:
    lodo = load_protocol("megc2019-lodo")
    samples = lodo.select(_samples_from_truth(lodo.ground_truth()))
    folds = lodo.folds(samples)
    assert [(f.name, len(f.train), len(f.test)) for f in folds] == [
        ("smic", 278, 164), ("casme2", 297, 145), ("samm", 309, 133)]
    _check_partition(folds, samples)
    cross = load_protocol("casme2-to-samm")
    assert (cross.kind, cross.train, cross.test) == ("cross-dataset", "casme2", "samm")
    two = [s for s in samples if s.dataset in ("casme2", "samm")]
    (fold,) = cross.folds(two)
    assert (fold.name, len(fold.train), len(fold.test)) == ("casme2->samm", 145, 133)
    assert {i.split("/")[0] for i in fold.train} == {"casme2"}
    assert {i.split("/")[0] for i in fold.test} == {"samm"}


def test_cross_dataset_and_lodo_on_constructed_samples() -> None:
    samples = [Sample(d, f"s{k}", f"c{c}", label) for d in ("a", "b", "c") for k in (1, 2)
               for c, label in enumerate(MEGC)]
    refs = (DatasetRef("a"), DatasetRef("b"), DatasetRef("c"))
    cross = Protocol("a-to-c", "cross-dataset", MEGC, refs, train="a", test="c")
    (fold,) = cross.folds(samples)
    assert fold.train == tuple(f"a/s{k}/c{c}" for k in (1, 2) for c in range(3))
    assert fold.test == tuple(f"c/s{k}/c{c}" for k in (1, 2) for c in range(3))
    lodo = Protocol("lodo", "leave-one-dataset-out", MEGC, (refs[2], refs[0], refs[1]))
    folds = lodo.folds(samples)
    assert [f.name for f in folds] == ["c", "a", "b"]  # the protocol file's dataset order
    assert all(len(f.train) == 12 and len(f.test) == 6 for f in folds)
    _check_partition(folds, samples)


@pytest.mark.parametrize("train, test", [("a", "z"), ("a", "a")])
def test_cross_dataset_toml_must_name_two_of_its_datasets(tmp_path: Path, train: str,
                                                          test: str) -> None:
    path = tmp_path / "bad-cross.toml"
    path.write_text(f'kind = "cross-dataset"\nclasses = ["x", "y"]\ntrain = "{train}"\n'
                    f'test = "{test}"\n[[datasets]]\nname = "a"\n[[datasets]]\nname = "b"\n')
    with pytest.raises(ProtocolError, match="train and test must name two different datasets"):
        load_protocol(path)


def test_synthetic_loso_folds() -> None:
    proto = load_protocol("synthetic-loso")
    samples = _synthetic(subjects=4, clips_per_class=2)
    assert len(samples) == 24
    folds = proto.folds(samples)
    assert [f.name for f in folds] == [f"synthetic/s0{k}" for k in range(1, 5)]
    for f in folds:
        subject = f.name.split("/")[1]
        assert len(f.test) == 6 and len(f.train) == 18
        assert {i.split("/")[1] for i in f.test} == {subject}
        assert subject not in {i.split("/")[1] for i in f.train}
    _check_partition(folds, samples)
    shuffled = list(samples)
    random.Random(1).shuffle(shuffled)
    again = proto.folds(shuffled)
    assert [f.name for f in again] == [f.name for f in folds]
    assert [set(f.test) for f in again] == [set(f.test) for f in folds]
    assert proto.folds(samples) == folds  # same input, identical folds


def test_loso_orders_subjects_naturally() -> None:
    samples = [Sample("x", subject, f"c{c}", label) for subject in ("s10", "s2", "s1")
               for c, label in enumerate(MEGC)]
    proto = Protocol("x-loso", "loso", MEGC, (DatasetRef("x"),))
    assert [f.name for f in proto.folds(samples)] == ["x/s1", "x/s2", "x/s10"]


def test_subject_holdout_is_subject_disjoint_and_deterministic() -> None:
    proto = load_protocol("synthetic-holdout")
    assert (proto.split, proto.test_fraction, proto.leaks_identity) == ("subject", 0.3, False)
    assert proto.label == "synthetic-holdout"
    samples = _synthetic(subjects=10, clips_per_class=1)
    (fold,) = proto.folds(samples)
    test_subjects = {i.split("/")[1] for i in fold.test}
    train_subjects = {i.split("/")[1] for i in fold.train}
    assert len(test_subjects) == 3 and len(train_subjects) == 7  # 30 % of 10 subjects
    assert not test_subjects & train_subjects
    assert len(fold.test) == 9 and len(fold.train) == 21
    shuffled = list(samples)
    random.Random(2).shuffle(shuffled)
    assert {i.split("/")[1] for i in proto.folds(shuffled)[0].test} == test_subjects
    other = dataclasses.replace(proto, split_seed=1).folds(samples)[0]
    assert {i.split("/")[1] for i in other.test} != test_subjects


def test_sample_level_holdout_is_flagged_as_leaking_identity() -> None:
    proto = load_protocol("synthetic-holdout-samples")
    assert proto.leaks_identity is True
    assert proto.label == "synthetic-holdout-samples [leaks identity]"
    samples = _synthetic(subjects=10, clips_per_class=3)
    (fold,) = proto.folds(samples)
    assert "leaks identity" in fold.name
    labels = {s.id: s.label for s in samples}
    assert Counter(labels[i] for i in fold.test) == {c: 9 for c in MEGC}  # 30 % of 30 per class
    test_subjects = {i.split("/")[1] for i in fold.test}
    assert test_subjects & {i.split("/")[1] for i in fold.train} == test_subjects
    assert proto.folds(samples) == [fold]


def test_fold_without_a_class_in_training_is_refused() -> None:
    samples = [Sample("x", s, f"c{c}", label) for s in ("s1", "s2", "s3")
               for c, label in enumerate(MEGC[:2])]
    samples.append(Sample("x", "s2", "only-surprise", "surprise"))
    proto = Protocol("x-loso", "loso", MEGC, (DatasetRef("x"),))
    with pytest.raises(ProtocolError, match=r"protocol x-loso, fold x/s2: no training sample of "
                                            r"class 'surprise'"):
        proto.folds(samples)


def test_sample_list_and_label_checks() -> None:
    proto = Protocol("listed", "loso", MEGC, (DatasetRef("x"),),
                     sample_list=(("x/s1/a", "negative"), ("x/s1/b", "surprise")))
    samples = [Sample("x", "s1", "a", "negative"), Sample("x", "s1", "b", "positive"),
               Sample("x", "s1", "c", "negative")]
    chosen = proto.select(samples)
    assert [(s.id, s.label) for s in chosen] == [("x/s1/a", "negative"), ("x/s1/b", "surprise")]
    assert dict(chosen[1].meta)["dataset_label"] == "positive"  # the list's label wins, recorded
    with pytest.raises(DataError, match=r"1 listed sample\(s\) are not in the data: x/s1/b"):
        proto.select(samples[:1])
    open_set = Protocol("open", "loso", MEGC, (DatasetRef("x"),))
    with pytest.raises(ProtocolError, match=r"x/s1/z: label 'joy' is not one of protocol open's"):
        open_set.select(samples + [Sample("x", "s1", "z", "joy")])


def test_protocol_from_a_toml_file_and_from_the_search_path(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-five.toml").write_text(
        'kind = "loso"\ndescription = "five synthetic classes in the MEGC2019 space"\n'
        'classes = ["negative", "positive", "surprise"]\n'
        '[[datasets]]\nname = "synthetic"\nlabels = "megc2019"\n'
        'params = { subjects = 2, clips_per_class = 1, classes = 5 }\n')
    proto = load_protocol(tmp_path / "my-five.toml")
    assert proto.name == "my-five" and proto.datasets[0].params["classes"] == 5
    samples = proto.load_samples()
    # anger, disgust, sadness -> negative; happiness -> positive; surprise -> surprise; x 2 subjects
    assert Counter(s.label for s in samples) == {"negative": 6, "positive": 2, "surprise": 2}
    assert dict(samples[0].meta)["native_label"] == "anger"
    assert [f.name for f in proto.folds(samples)] == ["synthetic/s01", "synthetic/s02"]
    # the dataset parameter given at run time wins over the file's
    assert len(proto.load_samples(dataset_params={"synthetic": {"subjects": 3}})) == 15

    with pytest.raises(UnknownNameError):
        load_protocol("my-five")
    monkeypatch.setenv("MERBENCH_PROTOCOL_PATH", str(tmp_path))
    assert "my-five" in merbench.names("protocol")
    assert merbench.protocol("my-five").description.startswith("five synthetic")


_DS = '\n[[datasets]]\nname = "x"\n'


@pytest.mark.parametrize("body, message", [
    ('kind = "kfold"\nclasses = ["a", "b"]' + _DS, "kind 'kfold' is not one of"),
    ('kind = "loso"' + _DS, "missing key 'classes'"),
    ('kind = "loso"\nclasses = ["a", "b"]\n', "missing key 'datasets'"),
    ('kind = "holdout"\nsplit = "clip"\nclasses = ["a", "b"]' + _DS,
     "split must be 'subject' or 'sample'"),
    ('kind = "loso"\nclasses = [\n', "is not valid TOML"),
    ('kind = "loso"\nclasses = ["a", "b", "a"]' + _DS, "class 'a' is listed twice in classes"),
    ('kind = "loso"\nclasses = ["a"]' + _DS, r"classes = \['a'\] must be two or more"),
    ('kind = "loso"\nclasses = "a,b"' + _DS, "classes = 'a,b' is not a list of class names"),
    ('kind = "holdout"\ntest_fraction = 1.5\nclasses = ["a", "b"]' + _DS,
     r"test_fraction = 1.5 is outside \(0, 1\)"),
    ('kind = "holdout"\ntest_fraction = 0\nclasses = ["a", "b"]' + _DS,
     r"test_fraction = 0 is outside \(0, 1\)"),
    ('kind = "holdout"\ntest_fraction = "abc"\nclasses = ["a", "b"]' + _DS,
     r"test_fraction = 'abc' is not a number in \(0, 1\)"),
    ('kind = "holdout"\nsplit_seed = true\nclasses = ["a", "b"]' + _DS,
     "split_seed = True is not an integer"),
    ('kind = "loso"\nclases = ["a", "b"]\nclasses = ["a", "b"]' + _DS,
     "unknown key 'clases' \\(did you mean 'classes'\\?\\)"),
    ('kind = "loso"\nclasses = ["a", "b"]\ndatasets = ["synthetic"]\n',
     "datasets entry 'synthetic' is not a table"),
    ('kind = "loso"\nclasses = ["a", "b"]' + _DS + 'label = "5class"\n',
     "unknown key 'datasets\\[0\\].label' \\(did you mean 'labels'\\?\\)"),
    ('kind = "loso"\nclasses = ["a", "b"]' + _DS + 'params = 3\n',
     "datasets\\[0\\].params = 3 is not a table of dataset parameters"),
    ('kind = "loso"\nclasses = ["a", "b"]\ndatasets = []\n', "datasets is empty"),
    ('kind = "loso"\nsamples = "nope.csv"\nclasses = ["a", "b"]' + _DS,
     "samples file .*nope.csv does not exist"),
])
def test_malformed_protocol_files(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(body)
    with pytest.raises(ProtocolError, match=message) as info:
        load_protocol(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x02binary\xff\xfe" * 50, "is a binary file"),
    (b"kind = \"loso\"\xe9\n", r"is not UTF-8 text \(byte 0xe9"),
])
def test_protocol_files_that_are_not_text(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(content)
    with pytest.raises(ProtocolError, match=f"protocol file .*binary.toml {message}"):
        load_protocol(path)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-8"])
def test_sample_lists_in_any_spreadsheet_encoding_with_quoted_headers(tmp_path: Path,
                                                                      encoding: str) -> None:
    (tmp_path / "list.csv").write_bytes(
        '"dataset","subject","clip","label"\r\ncasme2,1,EP01,0\r\n"CASMEII","sub02",'
        '"EP02","1"\r\n'.encode(encoding))
    (tmp_path / "p.toml").write_text('kind = "loso"\nclasses = ["negative", "positive"]\n'
                                     'samples = "list.csv"' + _DS)
    proto = load_protocol(tmp_path / "p.toml")
    assert proto.sample_list == (("casme2/sub01/EP01", "negative"),
                                 ("casme2/sub02/EP02", "positive"))


def test_a_sample_list_naming_a_sample_twice_names_both_lines(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("dataset,subject,clip,label\ncasme2,1,EP01,0\n"
                                       "casme2,sub01,EP01,1\n")
    (tmp_path / "p.toml").write_text('kind = "loso"\nclasses = ["a", "b"]\nsamples = "list.csv"'
                                     + _DS)
    with pytest.raises(ProtocolError, match="lines 2 and 3 both list casme2/sub01/EP01"):
        load_protocol(tmp_path / "p.toml")


def test_unknown_protocol_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown protocol 'synthetic-los' \(did you mean "
                                               r"synthetic-loso"):
        load_protocol("synthetic-los")
    with pytest.raises(UnknownNameError, match="see `merbench list protocol`"):
        merbench.protocol("zzzz")


def test_protocol_needing_a_data_root_says_how_to_give_it() -> None:
    proto = load_protocol("casme2-5class-loso")
    with pytest.raises(DataError, match=r"needs dataset 'casme2' but no data root .*--data-root "
                                        r"casme2=/path"):
        proto.load_samples()

