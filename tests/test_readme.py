"""README's set-up commands are the ones CI runs, its plugin example really works, its tour runs
top to bottom and its file-format examples parse."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    demo_cmd = [ln for ln in blocks[0].splitlines() if ln and not ln.startswith("#")]
    test_cmd = [ln for ln in blocks[1].splitlines() if ln and not ln.startswith("#")]
    assert len(demo_cmd) == 1 and demo_cmd[0].endswith("merbench demo")
    assert len(test_cmd) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0] in ci, "the test command in README.md and .ci/run differ"


def test_readme_plugin_example_registers_and_runs(tmp_path: Path, tiny) -> None:
    import types

    import numpy as np

    import merbench
    from merbench.plugins import register_plugin, unregister_plugin

    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n# my_mer/plugin.py\n(.*?)```", text, flags=re.S).group(1)
    module = types.ModuleType("readme_plugin")
    exec(compile(code, "README.md", "exec"), module.__dict__)  # noqa: S102 - our own README
    register_plugin(module, name="readme_plugin")
    try:
        assert "mean-motion-tinynet" in merbench.names("method")
        frames = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
        clip = merbench.Clip.from_array(frames, onset=0, apex=3, offset=5)
        x = merbench.preprocessor("mean-motion", size=4)(clip)
        assert x.shape == (4, 4)
        model = merbench.model("tinynet", num_classes=2, epochs=2)
        X = np.random.default_rng(1).random((8, 4, 4)).astype(np.float32)
        proba = model.fit(X, np.array([0, 1] * 4)).predict_proba(X)
        assert proba.shape == (8, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
        # every effective setting is a parameter, with the model's own defaults
        params = merbench.model("tinynet", batch_size=7).get_params()
        assert params["batch_size"] == 7 and params["epochs"] == 20 and params["lr"] == 1e-2
        assert params["optimizer"] == "adam" and params["hidden"] == 16
        # ... and the stored run records them all
        result = merbench.run(protocol="synthetic-loso", method="mean-motion-tinynet",
                              overrides={"model.batch_size": 5, "model.epochs": 2},
                              dataset_params=tiny, store=str(tmp_path / "s.sqlite"))
        stored = result.params
        from merbench.training import TRAINING_SETTINGS

        assert {f"model.{k}" for k in TRAINING_SETTINGS} <= set(stored)
        assert stored["model.batch_size"] == 5 and stored["model.epochs"] == 2
        assert stored["model.lr"] == 1e-2 and stored["model.hidden"] == 16
    finally:
        unregister_plugin("readme_plugin")


# -- the tour, top to bottom ------------------------------------------------------------------
# The first bash block of "A 5-minute tour" runs on the synthetic set as written; the block after
# it needs the licensed releases and is not run. To keep the test fast every command gets a
# smaller synthetic set (still large enough for dlib to find the faces) and deep models one epoch.
TOUR_DATA = {"subjects": 3, "clips_per_class": 1, "size": 64, "frames": 20}


def _tour_commands() -> list[list[str]]:
    import shlex

    text = (ROOT / "README.md").read_text().split("## A 5-minute tour", 1)[1]
    block = _bash_blocks(text)[0].replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in commands if c]


def _quick(args: list[str]) -> list[str]:
    from merbench.base import init_params
    from merbench.plugins import entry

    command, extra = args[0], []
    flag = {"run": "--data-param", "sweep": "--data-param", "predict": "--data-param",
            "explain": "--data-param", "train": "--param"}.get(command)
    if flag:
        prefix = "synthetic." if command in ("run", "sweep") else ""
        for key, value in TOUR_DATA.items():
            extra += [flag, f"{prefix}{key}={value}"]
    if command in ("run", "train"):
        method = args[args.index("--method") + 1]
        model = entry("method", method).factory.model[0]
        if "epochs" in init_params(entry("model", model).factory):
            extra += ["--set", "model.epochs=1"]
    return args + extra


@pytest.mark.slow
def test_the_tour_runs_top_to_bottom_on_the_synthetic_set(cli, in_tmp: Path,
                                                          one_torch_thread) -> None:
    commands = _tour_commands()
    assert all(c[0] == "merbench" for c in commands)
    assert not any("/data/" in " ".join(c) for c in commands)  # real data: the next block
    outputs = []
    for args in commands:
        out = cli(*_quick(args[1:]))
        assert out.code == 0, f"{' '.join(args)}:\n{out.out}\n{out.err}"
        outputs.append((" ".join(args), out))
    by_command = dict(outputs)
    runs = [o for c, o in outputs if c.startswith("merbench run ") and "diff-logreg" in c]
    assert "reusing stored run" not in runs[0].err and "reusing stored run" in runs[1].err
    assert any("partial run: 1 of 3 folds" in o.out for c, o in outputs if "--limit-folds" in c)
    assert any(o.out.strip().splitlines()[-1].startswith("3 seeds (0, 1, 2):")
               for c, o in outputs if "--seeds 3" in c)
    assert "model.epochs" in by_command["merbench show flow-ststnet"].out
    assert "diff-logreg" in by_command["merbench leaderboard --protocol synthetic-loso"].out
    assert (in_tmp / "model.pt").is_file()
    assert (in_tmp / "explanations" / "gradcam_neg_01.png").is_file()


def test_readme_scoring_examples_parse() -> None:
    from merbench.scoring import read_csv, read_megc_log

    text = (ROOT / "README.md").read_text().split("## Scoring files", 1)[1]
    csv_text = re.search(r"```csv\n(.*?)```", text, flags=re.S).group(1)
    log_text = re.search(r"```text\n(.*?)```", text, flags=re.S).group(1)
    classes = ["negative", "positive", "surprise"]
    rows = read_csv(csv_text, classes, "README")
    assert [(r.sample_id, r.pred, r.gt) for r in rows] == [
        ("casme2/sub01/EP02_01f", "positive", "positive"),
        ("samm/006/006_1_2", "negative", "negative"),
        ("smic/s01/s01_ne_01", "negative", "negative")]
    log = read_megc_log(log_text, classes, "README")
    assert [(r.sample_id, r.fold, r.gt, r.pred) for r in log] == [
        ("casme2/sub01/EP02_01f", "casme2/sub01", "positive", "positive"),
        ("samm/006/006_1_2", "samm/006", "negative", "surprise")]
