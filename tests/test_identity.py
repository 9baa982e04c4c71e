"""A run's identity includes the code that computes it: an edited plugin is a new run, an
unchanged one is reused and says so."""
from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import merbench
from merbench.plugins import register_plugin, unregister_plugin
from merbench.provenance import code_digest, code_fingerprint
from merbench.runner import plan_run
from merbench.store import Store

# a third-party plugin package: the model's base class lives in a helper module that the
# plugin imports lazily (inside a function), as plugins often do
HELPER = '''
import numpy as np
from merbench import Model

CLASS = 0


class ConstBase(Model):
    """Predicts class CLASS for every sample."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.seed = seed

    def fit(self, X, y, groups=None):
        return self

    def predict_proba(self, X):
        return np.eye(self.num_classes)[[CLASS] * len(X)]
'''

PLUGIN = '''
from merbench import MethodSpec, hookimpl

from .helper import ConstBase


class Const(ConstBase):
    """The registered model."""


@hookimpl
def register_models(register):
    register("const", Const)


@hookimpl
def register_methods(register):
    from . import extra  # noqa: F401 - a lazy import of the same package counts too

    register("const-method", MethodSpec((("apex-frame", {"size": 4}),), ("const", {})))
'''


@pytest.fixture()
def const_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "constplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (pkg / "helper.py").write_text(textwrap.dedent(HELPER))
    (pkg / "extra.py").write_text("VALUE = 1\n")
    (pkg / "unused.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_plugin(importlib.import_module("constplug"), name="constplug")
    try:
        yield pkg
    finally:
        unregister_plugin("constplug")
        for name in [m for m in sys.modules if m == "constplug" or m.startswith("constplug.")]:
            del sys.modules[name]


def _reload(pkg: Path) -> None:
    """What a new process does after the user edited the plugin: import the new code."""
    unregister_plugin("constplug")
    importlib.reload(importlib.import_module("constplug.helper"))
    register_plugin(importlib.reload(importlib.import_module("constplug")), name="constplug")


def test_fingerprint_covers_the_plugin_its_bases_and_lazy_imports_only(const_plugin: Path
                                                                        ) -> None:
    import numpy as np

    from merbench.plugins import entry
    from merbench_plugins.baseline import ApexFrame

    fp = code_fingerprint([entry("model", "const").factory, ApexFrame])
    # the model's module, its base class's module, the package module imported lazily, the
    # step's plugin module and merbench itself; not the unused module, numpy or the stdlib
    assert set(fp) == {"merbench", "constplug", "constplug.helper", "constplug.extra",
                       "merbench_plugins.baseline"}
    assert all(len(v) == 16 for v in fp.values())
    assert np.__name__ not in fp
    before = code_digest(fp)
    (const_plugin / "unused.py").write_text("VALUE = 2  # edited\n")
    assert code_digest(code_fingerprint([entry("model", "const").factory, ApexFrame])) == before
    (const_plugin / "extra.py").write_text("VALUE = 2  # edited\n")
    after = code_fingerprint([entry("model", "const").factory, ApexFrame])
    assert after["constplug.extra"] != fp["constplug.extra"]
    assert after["constplug.helper"] == fp["constplug.helper"]


def test_edited_plugin_is_a_new_run_unchanged_one_is_reused(const_plugin: Path, tmp_path: Path,
                                                            tiny) -> None:
    common = dict(protocol="synthetic-loso", method="const-method", dataset_params=tiny,
                  store=str(tmp_path / "r.sqlite"))
    first = merbench.run(**common)
    assert {p.pred for p in first.predictions} == {"negative"}
    assert not first.reused
    again = merbench.run(**common)
    assert again.reused and again.run_id == first.run_id

    # the user edits the base class in the helper module (not the registered module)
    helper = const_plugin / "helper.py"
    helper.write_text(helper.read_text().replace("CLASS = 0", "CLASS = 1  # edited"))
    _reload(const_plugin)
    edited = merbench.run(**common)
    assert not edited.reused and edited.run_id != first.run_id
    assert {p.pred for p in edited.predictions} == {"positive"}  # the new code's number
    rec = Store(tmp_path / "r.sqlite").run(edited.run_id)
    old = Store(tmp_path / "r.sqlite").run(first.run_id)
    assert rec.versions["code"]["constplug.helper"] != old.versions["code"]["constplug.helper"]
    assert rec.versions["code"]["constplug"] == old.versions["code"]["constplug"]
    assert rec.info["code"] == code_digest(rec.versions["code"]) != old.info["code"]
    # and the edited run is the one reused next time
    assert merbench.run(**common).run_id == edited.run_id


def test_rerun_runs_an_unchanged_run_again(const_plugin: Path, tmp_path: Path, tiny) -> None:
    common = dict(protocol="synthetic-loso", method="const-method", dataset_params=tiny,
                  store=str(tmp_path / "r.sqlite"))
    first = merbench.run(**common)
    rerun = merbench.run(rerun=True, **common)
    assert rerun.run_id != first.run_id and not rerun.reused
    assert len(Store(tmp_path / "r.sqlite").runs()) == 2


def test_cli_announces_a_reused_run_in_one_line(const_plugin: Path, cli, in_tmp: Path) -> None:
    args = ["run", "-p", "synthetic-loso", "-m", "const-method", "-q",
            "--data-param", "synthetic.subjects=4", "--data-param", "synthetic.size=32",
            "--data-param", "synthetic.frames=20", "--data-param", "synthetic.clips_per_class=2"]
    first = cli(*args)
    assert first.code == 0 and "reusing" not in first.err
    run_id = Store(in_tmp / "merbench-results" / "results.sqlite").runs()[0].id
    second = cli(*args)
    assert second.code == 0
    lines = [ln for ln in second.err.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert lines[0].startswith(f"reusing stored run {run_id} finished ")
    assert lines[0].endswith("--rerun to run again")
    assert f"run {run_id})" in second.out  # the same report as the first time
    third = cli(*args, "--rerun")
    assert third.code == 0 and "reusing" not in third.err
    assert len(Store(in_tmp / "merbench-results" / "results.sqlite").runs()) == 2


def test_notice_time_is_local_hh_mm_today() -> None:
    from datetime import datetime, timedelta, timezone

    from merbench.runner import _when

    now = datetime.now(timezone.utc).replace(microsecond=0)
    assert _when(now.isoformat()) == now.astimezone().strftime("%H:%M")
    old = now - timedelta(days=3)
    assert _when(old.isoformat()) == old.astimezone().strftime("%Y-%m-%d %H:%M")
    assert _when(None) == "(time unknown)"


def test_plan_of_an_unchanged_run_is_marked_reused(const_plugin: Path, tmp_path: Path,
                                                  tiny) -> None:
    store = Store(tmp_path / "r.sqlite")
    common = dict(protocol="synthetic-loso", method="const-method", dataset_params=tiny,
                  store=store)
    merbench.run(**common)
    plan = plan_run(**common)
    assert plan.reused and plan.todo == [] and plan.n_folds == 4
    assert plan.notice().startswith(f"reusing stored run {plan.run_id} finished ")
