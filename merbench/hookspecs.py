"""Hook specifications: every plugin, built-in or third-party, registers through these.

Each hook receives a ``register`` callback; call it once per name you provide::

    from merbench import hookimpl

    @hookimpl
    def register_models(register):
        register("my-model", MyModel, description="one line")
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("merbench")
hookimpl = pluggy.HookimplMarker("merbench")


@hookspec
def register_datasets(register):  # type: ignore[no-untyped-def]
    """Register dataset factories: ``register(name, factory, description=..., ids=...)``.

    ``factory(root, **params)`` returns a :class:`merbench.datasets.Dataset`; a dataset read
    from files takes the release folder as ``root`` (required: the runner asks the user for
    ``--data-root NAME=DIR`` when ``root`` has no default), one without files (synthetic) takes
    no root. ``ids=IdSpelling(subject=..., clip_has_subject=..., aliases=...)``
    (:mod:`merbench.ids`) declares how the database spells subject and clip ids, so protocol
    sample lists, ``merbench score`` and checkpoint look-up normalise them. A dataset that reads
    precomputed model inputs from an index (``--inputs``) registers with ``inputs=True``.
    """


@hookspec
def register_preprocessors(register):  # type: ignore[no-untyped-def]
    """Register step factories: ``factory(**params)`` returns a callable step(clip) -> Clip or
    array (subclass :class:`merbench.Step`; bump its ``version`` when its output changes).

    Steps and models document their parameters with ``:param name: meaning`` lines in the
    class (or ``__init__``) docstring, which ``merbench show`` prints; ``merbench
    check-plugin`` checks the contract (:mod:`merbench.checks`)."""


@hookspec
def register_models(register):  # type: ignore[no-untyped-def]
    """Register model factories: ``factory(**params)`` with ``fit(X, y, groups=None)`` and
    ``predict_proba(X)`` (subclass :class:`merbench.Model`, or
    :class:`merbench.training.TorchClassifier` for deep models).

    Optional: ``get_state``/``set_state`` (deployable with ``merbench train``/``predict``),
    ``load_weights(path, input_shape)`` (``--checkpoints``), ``init_`` (how weights were
    initialised, recorded per fold), ``fold_artifacts(X_test) -> dict[str, ndarray]`` (stored
    beside each fold), and ``explain(X, out_dir, targets=None, names=None, labels=None) ->
    list[Path]``: write explanation figures for inputs ``X`` (as given to ``predict_proba``)
    into ``out_dir`` and return their paths (``merbench explain``); every TorchClassifier has a
    Grad-CAM ``explain``.
    """


@hookspec
def register_methods(register):  # type: ignore[no-untyped-def]
    """Register named recipes: ``register(name, MethodSpec(...), description=...)``;
    ``MethodSpec(demo={...})`` puts the method in ``merbench demo`` with those overrides."""


@hookspec
def register_commands(cli):  # type: ignore[no-untyped-def]
    """Add click commands to the ``merbench`` command group ``cli``."""
