"""README's set-up commands are the ones CI runs, and its plugin example really works."""
from __future__ import annotations

import re
from pathlib import Path

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
