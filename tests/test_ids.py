"""Datasets own their id spellings: a third-party dataset registers its subject/clip spellings
and name aliases, and the core normalises its ids in protocol lists, `merbench score` and
checkpoint look-up exactly as it does the built-in databases' (it names no database itself)."""
from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import merbench
from merbench import Dataset, Sample, hookimpl
from merbench.ids import IdSpelling, canonical_dataset, normalise_id
from merbench.plugins import register_plugin, unregister_plugin
from merbench.protocols import load_protocol
from merbench.runner import checkpoint_paths
from merbench.scoring import score_file

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("negative", "positive", "surprise")


def _toy(root: str | None = None) -> Dataset:
    samples = [Sample("toyds", f"P{s:03d}", f"P{s:03d}-c{c}", CLASSES[c]) for s in (1, 2)
               for c in range(3)]
    return Dataset(samples, name="toyds")


@pytest.fixture()
def toyds() -> Iterator[None]:
    module = types.ModuleType("toyds_plugin")

    @hookimpl
    def register_datasets(register):  # type: ignore[no-untyped-def]
        register("toyds", _toy, ids=IdSpelling(subject="P{:03d}", aliases=("toy-ds", "ToyDS2")))

    module.register_datasets = register_datasets
    register_plugin(module, name="toyds_plugin")
    yield
    unregister_plugin("toyds_plugin")


def test_the_core_names_no_database() -> None:
    names = ("casme2", "samm", "smic", "casme_sq", "casme3a", "mmew", "folder")
    for path in (ROOT / "merbench").glob("*.py"):
        text = path.read_text()
        for name in names:
            assert not re.search(rf"[\"']{name}[\"']", text), f"{path.name} names {name!r}"


def test_built_in_spellings_come_from_their_plugins() -> None:
    assert normalise_id("CASMEII", 1, "EP02_01f") == "casme2/sub01/EP02_01f"
    assert normalise_id("smic_hs", "s1", "s1_ne_01") == "smic/s01/s01_ne_01"
    assert normalise_id("samm", 6.0, "6_1_2") == "samm/006/006_1_2"
    assert normalise_id("synthetic", "s1", "c1") == "synthetic/s1/c1"  # declares none: as written


def test_a_third_party_dataset_gets_its_ids_normalised(toyds, tmp_path: Path) -> None:
    assert canonical_dataset("TOY-DS") == "toyds" and canonical_dataset("toyds2") == "toyds"
    assert normalise_id("Toy-DS", "7", "P7-c1") == "toyds/P007/P7-c1"
    # a protocol sample list spelled loosely
    (tmp_path / "list.csv").write_text("dataset,subject,clip,label\n" + "".join(
        f"TOY-DS,{s},P{s:03d}-c{c},{c}\n" for s in (1, 2) for c in range(3)))
    (tmp_path / "toy.toml").write_text('name = "toy"\nkind = "loso"\nsamples = "list.csv"\n'
                                       'classes = ["negative", "positive", "surprise"]\n'
                                       '[[datasets]]\nname = "toyds"\n')
    proto = load_protocol(tmp_path / "toy.toml")
    assert sorted(proto.ground_truth())[0] == "toyds/P001/P001-c0"
    samples = proto.load_samples()
    assert len(samples) == 6
    # merbench score with the alias and bare subject numbers
    (tmp_path / "pred.csv").write_text("dataset,subject,clip,pred\n" + "".join(
        f"toy-ds,{s},P{s:03d}-c{c},{CLASSES[c]}\n" for s in (1, 2) for c in range(3)))
    rep = score_file(tmp_path / "pred.csv", proto)
    assert rep["pooled"].uf1 == 1.0 and rep["coverage"]["scored"] == 6
    # per-subject checkpoints named loosely (1.pth for P001)
    weights = tmp_path / "w"
    weights.mkdir()
    for name in ("1.pth", "P002.pth"):
        (weights / name).write_bytes(b"")
    found = checkpoint_paths(proto.folds(samples), weights, {s.id: s for s in samples})
    assert sorted(Path(p).name for p in found.values()) == ["1.pth", "P002.pth"]


def test_only_datasets_declare_ids(toyds) -> None:
    module = types.ModuleType("bad_ids")

    @hookimpl
    def register_models(register):  # type: ignore[no-untyped-def]
        register("m", object, ids=IdSpelling())

    module.register_models = register_models
    register_plugin(module, name="bad_ids")
    try:
        with pytest.warns(Warning, match="only datasets declare ids"):
            merbench.names("model")
    finally:
        unregister_plugin("bad_ids")
