"""Parameters from the command line: `merbench show`, `merbench list --verbose`, and the
`:param name: meaning` docstring convention they read."""
from __future__ import annotations

import merbench
from merbench import Step
from merbench.params import describe_params, format_value, param_docs
from merbench.training import TRAINING_SETTINGS


class Documented(Step):
    """A step.

    :param size: output side in pixels,
        continued on the next line
    :param int mode: typed the Sphinx way
    """

    name = "documented"

    def __init__(self, size: int = 4, mode: str = "a", other: float | None = None) -> None:
        self.size, self.mode, self.other = size, mode, other


def test_param_docs_read_the_docstring_convention() -> None:
    assert param_docs(Documented) == {"size": "output side in pixels, continued on the next line",
                                      "mode": "typed the Sphinx way"}
    infos = {p.name: p for p in describe_params(Documented)}
    assert (infos["size"].default, infos["size"].type) == (4, "int")
    assert infos["other"].help == "" and infos["other"].type == "float | None"

    def factory(radius: float = 1.5) -> None:
        """:param radius: in pixels"""

    assert [(p.name, p.default, p.help) for p in describe_params(factory)] == \
        [("radius", 1.5, "in pixels")]


def test_format_value_is_what_set_accepts() -> None:
    from merbench.methods import parse_value

    for value in (3, 0.5, "svu", None, True, (1, 1, 4), (2,)):
        assert parse_value(format_value(value)) == value


def test_show_method_lists_every_set_key_with_value_type_and_meaning(cli) -> None:
    out = cli("show", "flow-ststnet")
    assert out.code == 0, out.err
    keys = {line.split()[0] for line in out.out.splitlines()
            if line.startswith(("face-crop.", "flow-image.", "model."))}
    # exactly the keys the run records (runner-supplied ones aside)
    assert keys == set(merbench.method("flow-ststnet").params())
    lines = {line.split()[0]: line for line in out.out.splitlines() if line[:1].isalpha()}
    assert "128 (default 224)" in lines["face-crop.size"]  # the method's value, and the default
    assert "int" in lines["face-crop.size"] and "output side in pixels" in lines["face-crop.size"]
    assert lines["model.epochs"].split()[1] == "500"
    assert TRAINING_SETTINGS["epochs"].help in lines["model.epochs"]
    assert "dropout after each stream" in lines["model.dropout"]
    assert "'svu' (default 'uvs')" in lines["flow-image.channels"]
    assert "set by the runner: num_classes" in out.out
    assert "model.num_classes" not in out.out


def test_show_step_model_and_dataset(cli) -> None:
    step = cli("show", "step", "lbp-top")
    assert step.code == 0
    assert "lbp-top.radii" in step.out and "(1, 1, 4)" in step.out
    assert "radii (R_x, R_y, R_t)" in step.out
    model = cli("show", "model", "svm")
    assert model.code == 0 and "model.kernel" in model.out and "the margin penalty" in model.out
    data = cli("show", "dataset", "synthetic")
    assert data.code == 0 and "--data-param key" in data.out
    assert "synthetic.subjects" in data.out and "number of subjects" in data.out


def test_show_errors_name_the_fix(cli) -> None:
    out = cli("show", "svm")
    assert out.code == 2 and "'svm' is a model, not a method" in out.err
    assert "merbench show model svm" in out.err
    typo = cli("show", "flow-ststnt")
    assert typo.code != 0 and "did you mean flow-ststnet" in typo.err
    kind = cli("show", "recipe", "x")
    assert kind.code == 2 and "cannot show 'recipe'" in kind.err


def test_list_verbose_shows_parameters(cli) -> None:
    plain = cli("list", "model")
    verbose = cli("list", "model", "--verbose")
    assert "parameters" not in plain.out
    line = next(ln for ln in verbose.out.splitlines() if ln.startswith("model   ststnet"))
    assert line.rstrip().endswith(f"dropout=0.5; + {len(TRAINING_SETTINGS)} training settings")
    methods = cli("list", "method", "-v")
    row = next(ln for ln in methods.out.splitlines() if ln.startswith("method  diff-logreg "))
    assert row.rstrip().endswith("apex-diff → logreg; apex-diff.size=32")


def test_every_built_in_step_and_model_documents_its_parameters() -> None:
    from merbench.plugins import entries

    undocumented = [f"{e.kind} {e.name}: {p.name}" for kind in ("preprocessor", "model")
                    for e in entries(kind) if e.distribution == "merbench"
                    for p in describe_params(e.factory) if not p.help]
    assert undocumented == []
