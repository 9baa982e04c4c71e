"""Plugins: a throwaway plugin registers like a third-party one and runs end to end."""
from __future__ import annotations

import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest

import merbench
from merbench import Clip, Dataset, MethodSpec, Model, Sample, Step, hookimpl
from merbench.errors import ConfigError, UnknownNameError
from merbench.plugins import PluginWarning, entries, entry, register_plugin, unregister_plugin
import sys

CLASSES = ("negative", "positive", "surprise")
# apex - onset brightness per class; subject s3's surprise is weak (45), nearer positive (40)
SIGNAL = {"negative": 10, "positive": 40, "surprise": 70}


class ToyFaces(Dataset):
    """Three-frame clips whose apex brightens by a class-dependent amount."""

    name = "toy-faces"

    def __init__(self, root: str | None = None, subjects: int = 3) -> None:
        samples = [Sample("toy-faces", f"s{k}", f"{c[:3]}_1", c, onset=0, apex=1, offset=2)
                   for k in range(1, subjects + 1) for c in CLASSES]
        super().__init__(samples, classes={"native": CLASSES})

    def load(self, sample: Sample) -> Clip:
        base = 20 * int(sample.subject[1:])
        d = 45 if sample.id == "toy-faces/s3/sur_1" else SIGNAL[sample.label]
        frames = np.full((3, 4, 4, 3), base, np.uint8)
        frames[1] += d
        return Clip.from_array(frames, onset=0, apex=1, offset=2, sample_id=sample.id)


class ApexGain(Step):
    """Mean apex brightness minus mean onset brightness, times ``scale``."""

    name = "toy-apex-gain"
    version = "1"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, clip: Clip) -> np.ndarray:
        f = clip.frames.astype(np.float64)
        return np.array([self.scale * (f[clip.apex].mean() - f[clip.onset].mean())])


class NearestCentroid(Model):
    """One centroid per class; one-hot probabilities."""

    def __init__(self, num_classes: int = 3) -> None:
        self.num_classes = num_classes

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> NearestCentroid:
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in range(self.num_classes)])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        dist = np.abs(X[:, None, :] - self.centroids_[None]).sum(axis=2)
        return np.eye(self.num_classes)[dist.argmin(axis=1)]


@hookimpl
def _datasets(register):  # type: ignore[no-untyped-def]
    register("toy-faces", ToyFaces)


@hookimpl
def _steps(register):  # type: ignore[no-untyped-def]
    register("toy-apex-gain", ApexGain, description="apex minus onset brightness")


@hookimpl
def _models(register):  # type: ignore[no-untyped-def]
    register("toy-centroid", NearestCentroid)


@hookimpl
def _methods(register):  # type: ignore[no-untyped-def]
    register("toy-method", MethodSpec((("toy-apex-gain", {"scale": 1.0}),), ("toy-centroid", {}),
                                      "apex gain + nearest centroid"))


@hookimpl
def _commands(cli):  # type: ignore[no-untyped-def]
    @cli.command("toy-hello")
    def hello() -> None:
        click.echo("hello from toy")


TOY_PLUGIN = types.SimpleNamespace(register_datasets=_datasets, register_preprocessors=_steps,
                                   register_models=_models, register_methods=_methods,
                                   register_commands=_commands)


@pytest.fixture()
def toy_plugin() -> Iterator[str]:
    register_plugin(TOY_PLUGIN, name="toy-plugin")
    try:
        yield "toy-plugin"
    finally:
        unregister_plugin("toy-plugin")
        from merbench.cli import cli

        cli.commands.pop("toy-hello", None)


def test_throwaway_plugin_registers_everything(toy_plugin: str) -> None:
    assert "toy-faces" in merbench.names("dataset")
    assert "toy-apex-gain" in merbench.names("preprocessor")
    assert "toy-centroid" in merbench.names("model")
    assert "toy-method" in merbench.names("method")
    e = entry("preprocessor", "toy-apex-gain")
    assert (e.plugin, e.distribution, e.description) == (
        "toy-plugin", "(registered at run time)", "apex minus onset brightness")
    # without a description the docstring's first line is used
    assert entry("model", "toy-centroid").description == "One centroid per class; one-hot probabilities."
    assert entry("method", "toy-method").description == "apex gain + nearest centroid"
    step = merbench.preprocessor("toy-apex-gain", scale=2.0)
    clip = merbench.dataset("toy-faces").load(Sample("toy-faces", "s1", "neg_1", "negative"))
    assert step(clip).tolist() == [20.0]
    assert step.get_params() == {"scale": 2.0} and repr(step) == "ApexGain(scale=2.0)"


def test_throwaway_plugin_runs_end_to_end(toy_plugin: str, tmp_path: Path) -> None:
    proto = tmp_path / "toy-loso.toml"
    proto.write_text('kind = "loso"\nclasses = ["negative", "positive", "surprise"]\n'
                     '[[datasets]]\nname = "toy-faces"\n')
    result = merbench.run(protocol=str(proto), method="toy-method", store=tmp_path / "r.sqlite",
                          cache_dir=str(tmp_path / "cache"))
    # fold s3: centroids 10 / 40 / 70, its weak surprise (45) -> positive; the rest correct.
    # negative F1 1, positive 2*3/(6+1) = 6/7, surprise 2*2/(4+1) = 4/5 -> UF1 31/35; UAR 8/9
    pooled = result.report["pooled"]
    assert pooled.confusion.tolist() == [[3, 0, 0], [0, 3, 0], [0, 1, 2]]
    assert result.uf1 == pytest.approx(31 / 35)
    assert result.uar == pytest.approx(8 / 9)
    assert sorted(result.report["per_fold"]) == ["toy-faces/s1", "toy-faces/s2", "toy-faces/s3"]
    assert result.report["per_fold"]["toy-faces/s3"].accuracy == pytest.approx(2 / 3)
    assert result.protocol.name == "toy-loso" and result.method == "toy-method"
    assert list((tmp_path / "cache").rglob("*.npy"))  # preprocessed arrays were cached

    again = merbench.run(protocol=str(proto), method="toy-method", store=tmp_path / "r.sqlite",
                         cache_dir=str(tmp_path / "cache"), overrides={"toy-apex-gain.scale": "2"},
                         rerun=True)
    assert again.uf1 == pytest.approx(31 / 35)  # scaling the feature changes nothing here
    assert again.run_id != result.run_id


def test_plugin_command_hook(toy_plugin: str, cli) -> None:
    res = cli("toy-hello")
    assert (res.code, res.out) == (0, "hello from toy\n")


def test_unregister_removes_the_names(toy_plugin: str) -> None:
    assert "toy-method" in merbench.names("method")
    unregister_plugin(toy_plugin)
    assert "toy-method" not in merbench.names("method")
    assert "diff-logreg" in merbench.names("method")
    with pytest.raises(UnknownNameError):
        merbench.method("toy-method")


def test_a_failing_plugin_warns_once_and_the_rest_keeps_working() -> None:
    @hookimpl
    def register_models(register):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    register_plugin(types.SimpleNamespace(register_models=register_models), name="broken-plugin")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            models = merbench.names("model")
            merbench.names("method")
        ours = [w for w in caught if issubclass(w.category, PluginWarning)
                and "broken-plugin" in str(w.message)]
        assert len(ours) == 1
        assert "failed in register_models" in str(ours[0].message)
        assert "RuntimeError: boom" in str(ours[0].message)
        assert "logreg" in models and "chance" in models
        assert merbench.model("logreg", C=0.5).C == 0.5
    finally:
        unregister_plugin("broken-plugin")


def test_a_name_registered_twice_warns_which_plugin_replaces_which() -> None:
    @hookimpl
    def register_models(register):  # type: ignore[no-untyped-def]
        register("logreg", NearestCentroid)

    register_plugin(types.SimpleNamespace(register_models=register_models), name="shadow")
    try:
        with pytest.warns(PluginWarning, match="model 'logreg' from plugin 'shadow' replaces"):
            merbench.names("model")
    finally:
        unregister_plugin("shadow")
    assert entry("model", "logreg").plugin == "baseline"


@pytest.mark.parametrize("call, message", [
    (lambda: merbench.model("logreq"), r"unknown model 'logreq' \(did you mean logreg"),
    (lambda: merbench.dataset("synthetc"), r"unknown dataset 'synthetc' \(did you mean synthetic"),
    (lambda: merbench.preprocessor("apex-dif"), r"did you mean apex-diff"),
    (lambda: merbench.method("diff-logre"), r"unknown method 'diff-logre' \(did you mean diff-logreg"),
    (lambda: merbench.method("qqqqqqq"), r"see `merbench list method`"),
    (lambda: entries("widget"), r"unknown kind 'widget'"),
])
def test_unknown_names_suggest_close_matches(call, message: str) -> None:
    with pytest.raises(UnknownNameError, match=message) as info:
        call()
    assert "KeyError" not in str(info.value) and not str(info.value).startswith("'")


@pytest.mark.parametrize("overrides, message", [
    ({"model.Cee": 1}, r"model 'logreg' has no parameter 'Cee' \(did you mean model.C\?\) "
                       r"\(valid keys: model.C, model.max_iter"),
    ({"apex-diff.sise": 3}, r"step 'apex-diff' has no parameter 'sise'"),
    ({"face-crop.size": 3}, (r"--set face-crop.size: method 'diff-logreg' has no part "
                             r"'face-crop' \(use model.PARAM or one of its steps: apex-diff")),
    ({"C": 1}, r"has no part 'C'"),
])
def test_set_with_unknown_parameter_is_a_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        merbench.method("diff-logreg", overrides)


def test_set_values_are_parsed_as_literals() -> None:
    m = merbench.method("diff-logreg", {"model.C": "0.5", "apex-diff.size": "(16, 16)",
                                        "model.class_weight": "None", "model.max_iter": "20"})
    assert m.params() == {"apex-diff.size": [16, 16], "model.C": 0.5, "model.class_weight": None,
                          "model.max_iter": 20}
    assert m.steps == [("apex-diff", {"size": (16, 16)})]
    model = m.build_model(num_classes=3, seed=7, device="cpu", progress=False)
    assert (model.C, model.seed, model.num_classes, model.max_iter) == (0.5, 7, 3, 20)
    assert not hasattr(model, "device")  # runtime values only where the model accepts them
    assert merbench.method("diff-logreg").params() != m.params()
    with pytest.raises(ConfigError, match="model 'logreg' has no parameter 'Cee'"):
        merbench.model("logreg", Cee=1)


@pytest.mark.slow
def test_run_time_plugin_works_in_worker_processes(tmp_path: Path, tiny,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from merbench.plugins import register_plugin, unregister_plugin

    (tmp_path / "my_runtime_plugin.py").write_text('''
import numpy as np
from merbench import MethodSpec, Step, hookimpl


class Mean(Step):
    name = "my-mean"

    def __call__(self, clip):
        return np.array([clip.frames.mean()], dtype=np.float32)


@hookimpl
def register_preprocessors(register):
    register("my-mean", Mean)


@hookimpl
def register_methods(register):
    register("my-mean-chance", MethodSpec((("my-mean", {}),), ("chance", {})))
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_runtime_plugin

    register_plugin(my_runtime_plugin, name="my_runtime_plugin")
    try:
        result = merbench.run(protocol="synthetic-loso", method="my-mean-chance", workers=2,
                              dataset_params=tiny, store=str(tmp_path / "s.sqlite"),
                              cache_dir=str(tmp_path / "cache"))
        assert len(result.predictions) == 24
    finally:
        unregister_plugin("my_runtime_plugin")
        sys.modules.pop("my_runtime_plugin", None)


def test_the_demo_takes_its_methods_from_the_registry() -> None:
    from merbench.demo import demo_methods

    module = types.ModuleType("demo_member")

    @hookimpl
    def register_methods(register):  # type: ignore[no-untyped-def]
        register("my-demo-chance", MethodSpec((("apex-frame", {"size": 4}),), ("chance", {}),
                                              demo={"model.strategy": "prior"}))

    module.register_methods = register_methods
    before = dict(demo_methods())
    assert before["flow-ststnet"] == {"model.epochs": 100} and before["chance"] == {}
    assert "ststnet" not in before and "ars-cropnet" not in before  # not flagged for the demo
    register_plugin(module, name="demo_member")
    try:
        assert dict(demo_methods())["my-demo-chance"] == {"model.strategy": "prior"}
    finally:
        unregister_plugin("demo_member")
