"""Contract checks (merbench/checks.py, `merbench check-plugin`): every built-in step and model
passes them on tiny inputs, and each check catches the fault it is for."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import merbench
from merbench import Model, Step
from merbench.checks import check_model, check_step

RNG = np.random.default_rng(0)
Y = np.array([0, 1, 2] * 4)
GROUPS = np.repeat(["a", "b", "c", "d"], 3)
IMAGES = RNG.integers(0, 256, (12, 28, 28, 3), dtype=np.uint8)
FEATURES = RNG.random((12, 20))

MODELS: list[tuple[str, np.ndarray, dict[str, Any]]] = [
    ("logreg", FEATURES, {}),
    ("chance", FEATURES, {"strategy": "prior"}),
    ("svm", FEATURES, {}),
    ("svm", FEATURES, {"kernel": "chi2"}),
    ("ststnet", IMAGES, {"epochs": 1, "batch_size": 6}),
    ("dual-inception", IMAGES, {"epochs": 1, "batch_size": 6}),
    ("cropnet", RNG.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8),
     {"epochs": 1, "size": 64, "crop": 32, "trunk": "test_convnext", "pretrained": False,
      "feature_dim": 8, "batch_size": 3}),
]

STEPS: list[tuple[str, dict[str, Any]]] = [
    ("apex-diff", {}), ("apex-frame", {"size": 16}), ("face-crop", {"size": 64}),
    ("key-frames", {}), ("ars", {"size": 32}), ("rrs", {}), ("flow", {"strain": True}),
    ("flow-image", {}), ("lbp-top", {"blocks": (2, 2, 1)}), ("lbp-sip", {"blocks": (2, 2, 1)}),
]


def _failed(results: list) -> list[str]:
    return [f"{r.target} / {r.check}: {r.detail}" for r in results if r.ok is False]


@pytest.mark.parametrize("name, X, params", MODELS,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(MODELS)])
def test_built_in_models_pass(name: str, X: np.ndarray, params: dict, one_torch_thread) -> None:
    y = Y[:len(X)]
    results = check_model(name, X, y, GROUPS[:len(X)], params, num_classes=3)
    assert _failed(results) == []
    assert {r.check for r in results if r.ok} >= {
        "get_params round trip (the --set keys)", "mistyped parameter refused",
        "fit / predict_proba: (n, classes) probabilities summing to 1",
        "deterministic under a seed (two fits, seed 0)"}
    state = next(r for r in results if r.check.startswith("get_state"))
    # every built-in model but the SVM is deployable (merbench train / predict)
    assert state.ok is (None if name == "svm" else True), state.detail


@pytest.fixture(scope="module")
def clip() -> merbench.Clip:
    ds = merbench.dataset("synthetic", subjects=2, clips_per_class=1, size=64, frames=20)
    return ds.load(ds.samples[0])


@pytest.mark.parametrize("name, params", STEPS, ids=[s for s, _ in STEPS])
def test_built_in_steps_pass(name: str, params: dict, clip: merbench.Clip) -> None:
    results = check_step(name, clip, params)
    assert _failed(results) == []
    assert [r.ok for r in results] == [True] * 6


# -- each check catches its fault ---------------------------------------------------------------
class Unnormalised(Model):
    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        self.num_classes, self.seed = num_classes, seed

    def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        return self

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        return np.full((len(X), self.num_classes), 0.5)


class Unseeded(Unnormalised):
    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        p = np.random.default_rng().random((len(X), self.num_classes))
        return p / p.sum(axis=1, keepdims=True)


class Drifting(Unnormalised):
    """Stores a parameter changed: rebuilding from get_params() drifts."""

    def __init__(self, num_classes: int = 3, seed: int = 0, k: int = 1) -> None:
        super().__init__(num_classes, seed)
        self.k = k + 1

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        return np.full((len(X), self.num_classes), 1 / self.num_classes)


class AcceptsAnything(Drifting):
    def __init__(self, num_classes: int = 3, seed: int = 0, **extra: Any) -> None:
        super().__init__(num_classes, seed)
        self.k = 1


class BadState(Drifting):
    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        super().__init__(num_classes, seed)
        self.k = 1

    def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        self.bias_ = np.arange(self.num_classes, dtype=float) + 1
        return self

    def predict_proba(self, X):  # type: ignore[no-untyped-def]
        return np.tile(self.bias_ / self.bias_.sum(), (len(X), 1))

    def get_state(self):  # type: ignore[no-untyped-def]
        return {"bias": self.bias_}

    def set_state(self, state, input_shape):  # type: ignore[no-untyped-def]
        self.bias_ = np.ones(self.num_classes)  # forgets what was saved
        return self


def _verdicts(results: list) -> dict[str, bool | None]:
    return {r.check.split(" (")[0].split(":")[0]: r.ok for r in results}


def test_model_checks_catch_their_faults() -> None:
    X, y = FEATURES, Y
    assert _verdicts(check_model(Unnormalised, X, y))["fit / predict_proba"] is False
    assert _verdicts(check_model(Unseeded, X, y))["deterministic under a seed"] is False
    drift = _verdicts(check_model(Drifting, X, y))
    assert drift["get_params round trip"] is False
    assert drift["fit / predict_proba"] is True
    assert drift["get_state / set_state round trip"] is None  # not deployable: skipped
    assert _verdicts(check_model(AcceptsAnything, X, y))["mistyped parameter refused"] is False
    assert _verdicts(check_model(BadState, X, y))["get_state / set_state round trip"] is False
    detail = next(r.detail for r in check_model(Unnormalised, X, y) if r.ok is False)
    assert "rows do not sum to 1 (off by up to 0.5)" in detail


class IntVersion(Step):
    name, version = "int-version", 2

    def __call__(self, clip):  # type: ignore[no-untyped-def]
        return np.zeros(3)


class Noisy(Step):
    name = "noisy"

    def __call__(self, clip):  # type: ignore[no-untyped-def]
        return np.random.default_rng().random(3)


def test_step_checks_catch_their_faults(clip: merbench.Clip) -> None:
    assert _verdicts(check_step(IntVersion, clip))["name and version"] is False
    noisy = _verdicts(check_step(Noisy, clip))
    assert noisy["same output twice"] is False
    assert noisy["cache key stable"] is None  # not registered: no cache key to check


# -- the command ----------------------------------------------------------------------------------
def test_check_plugin_command_on_the_readme_plugin(cli, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  one_torch_thread) -> None:
    import re
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n# my_mer/plugin.py\n(.*?)```", readme, flags=re.S).group(1)
    (tmp_path / "readme_mer.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = cli("check-plugin", "readme_mer")
    finally:
        sys.modules.pop("readme_mer", None)
    assert out.code == 0, out.out + out.err
    assert "readme_mer: all 12 checks passed" in out.out
    assert "model tinynet" in out.out and "step mean-motion" in out.out
    assert "mean-motion-tinynet" not in merbench.names("method")  # registered for the check only


def test_check_plugin_command_fails_on_a_broken_plugin(cli, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "broken_mer.py").write_text(textwrap.dedent('''
        import numpy as np
        from merbench import MethodSpec, Model, hookimpl

        class Half(Model):
            def __init__(self, num_classes: int = 3) -> None:
                self.num_classes = num_classes
            def fit(self, X, y, groups=None):
                return self
            def predict_proba(self, X):
                return np.full((len(X), self.num_classes), 0.5)

        @hookimpl
        def register_models(register):
            register("half", Half)

        @hookimpl
        def register_methods(register):
            register("half-method", MethodSpec((("apex-frame", {"size": 4}),), ("half", {})))
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = cli("check-plugin", "broken_mer")
    finally:
        sys.modules.pop("broken_mer", None)
    assert out.code == 2
    assert "FAIL" in out.out and "rows do not sum to 1" in out.out
    assert out.err.strip().endswith("broken_mer: 1 of 4 checks failed (see the detail column)")


def test_check_plugin_names_installed_plugins_when_unknown(cli) -> None:
    out = cli("check-plugin", "no_such_plugin_xyz")
    assert out.code == 2 and "no plugin or importable module 'no_such_plugin_xyz'" in out.err
    assert "ststnet" in out.err
