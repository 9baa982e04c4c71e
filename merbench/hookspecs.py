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
    """Register dataset factories: ``register(name, factory, description=...)``.

    ``factory(root=None, **params)`` returns a :class:`merbench.datasets.Dataset`.
    """


@hookspec
def register_preprocessors(register):  # type: ignore[no-untyped-def]
    """Register step factories: ``factory(**params)`` returns a callable step(clip)."""


@hookspec
def register_models(register):  # type: ignore[no-untyped-def]
    """Register model factories: ``factory(**params)`` with ``fit`` and ``predict_proba``."""


@hookspec
def register_methods(register):  # type: ignore[no-untyped-def]
    """Register named recipes: ``register(name, MethodSpec(...), description=...)``."""


@hookspec
def register_commands(cli):  # type: ignore[no-untyped-def]
    """Add click commands to the ``merbench`` command group ``cli``."""
