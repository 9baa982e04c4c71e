"""Methods: a named recipe (steps + model) with parameters that ``--set`` can override."""
from __future__ import annotations

import ast
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from .base import accepts_any, init_params, jsonable
from .errors import ConfigError, DataError, MerbenchError
from .types import Clip, MethodSpec


# Model parameters the runner supplies per fold: the protocol fixes num_classes, --seed and the
# fold fix seed, --device the device; train_state is a per-run, per-fold training-state file.
RUNTIME = frozenset({"num_classes", "seed", "device", "progress", "train_state"})


def parse_value(text: str) -> Any:
    """``--set`` values: Python literals (3, 0.1, (1, 1, 4), True, None) or plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in {"true", "false"}:
            return low == "true"
        return text


def check_params(factory: Any, params: Mapping[str, Any], what: str, prefix: str = "",
                 hidden: frozenset[str] = frozenset()) -> None:
    """Refuse a parameter the factory does not take, naming the closest valid key and all of
    them (as ``prefix + name``; ``hidden`` names are accepted but not offered)."""
    if accepts_any(factory):
        return
    known = init_params(factory)
    unknown = [k for k in params if k not in known]
    if unknown:
        import difflib

        offered = [prefix + k for k in known if k not in hidden]
        close = difflib.get_close_matches(prefix + unknown[0], offered, n=1)
        raise ConfigError(f"{what} has no parameter {unknown[0]!r}"
                          + (f" (did you mean {close[0]}?)" if close else ""),
                          f"valid keys: {', '.join(offered) or 'none'}")


@contextlib.contextmanager
def config_errors(what: str, params: Mapping[str, Any], fix: str = "fix the --set value"
                  ) -> Iterator[None]:
    """A factory's own refusal of a value (TypeError, ValueError, ...) as one ConfigError
    naming ``what`` and, unless the message shows them, the values given."""
    try:
        yield
    except MerbenchError:
        raise
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        given = ", ".join(f"{k}={v!r}" for k, v in params.items() if repr(v) not in message)
        raise ConfigError(f"{what}: {message}" + (f" (given {given})" if given else ""),
                          fix) from exc


@dataclass
class Method:
    """A resolved method: concrete step and model parameters, ready to build per fold."""

    name: str
    steps: list[tuple[str, dict[str, Any]]]
    model_name: str
    model_params: dict[str, Any]
    description: str = ""

    @classmethod
    def named(cls, name: str, overrides: Mapping[str, Any]) -> "Method":
        from .plugins import entry

        spec: MethodSpec = entry("method", name).factory
        return cls.from_spec(name, spec, overrides)

    @classmethod
    def from_spec(cls, name: str, spec: MethodSpec, overrides: Mapping[str, Any]) -> "Method":
        steps = [(s, dict(p)) for s, p in spec.steps]
        model_params = dict(spec.model[1])
        step_names = [s for s, _ in steps]
        for key, value in overrides.items():
            target, _, param = key.rpartition(".")
            if isinstance(value, str):
                value = parse_value(value)
            if target == "model" and param in RUNTIME:
                raise ConfigError(f"--set {key}: model.{param} is set by the runner",
                                  "use --seed / --device; the protocol fixes the classes")
            if target == "model":
                model_params[param] = value
            elif target in step_names:
                steps[step_names.index(target)][1][param] = value
            else:
                raise ConfigError(f"--set {key}: method {name!r} has no part {target or key!r}",
                                  f"use model.PARAM or one of its steps: "
                                  f"{', '.join(step_names) or '(none)'}")
        method = cls(name, steps, spec.model[0], model_params, spec.description)
        method.validate()
        return method

    def validate(self) -> None:
        """Every parameter checked before any work starts: names first, then each step and
        the model built once (their ``__init__`` checks values) and the model's own
        ``validate()`` (e.g. scikit-learn's parameter validation). Any failure is one
        ConfigError naming the method and the part."""
        from .plugins import entry

        for step, params in self.steps:
            check_params(entry("preprocessor", step).factory, params,
                         f"method {self.name!r}: step {step!r}", f"{step}.")
        check_params(entry("model", self.model_name).factory, self.model_params,
                     f"method {self.name!r}: model {self.model_name!r}", "model.", RUNTIME)
        for step, params in self.steps:
            with config_errors(f"method {self.name!r}: step {step!r}", params):
                entry("preprocessor", step).factory(**params)
        with config_errors(f"method {self.name!r}: model {self.model_name!r}",
                            self.model_params):
            model = self.build_model(num_classes=2, seed=0, device="cpu")
            if hasattr(model, "validate"):
                model.validate()

    def params(self) -> dict[str, Any]:
        """Every parameter, defaults included, flattened (``step.param`` / ``model.param``), as
        recorded on a run. Values the runner supplies per fold (num_classes, seed, device,
        progress) appear only when the method sets them."""
        from .plugins import entry

        out: dict[str, Any] = {}
        for name, values in self._step_params():
            out.update({f"{name}.{k}": jsonable(v) for k, v in sorted(values.items())})
        factory = entry("model", self.model_name).factory
        defaults = {k: p.default for k, p in init_params(factory).items()
                    if p.default is not p.empty and k not in RUNTIME}
        values = {**defaults, **self.model_params}
        out.update({f"model.{k}": jsonable(v) for k, v in sorted(values.items())})
        return out

    def uses_device(self) -> bool:
        """Whether the model takes a ``device`` (a deep model); any other runs on the CPU."""
        from .plugins import entry

        factory = entry("model", self.model_name).factory
        return accepts_any(factory) or "device" in init_params(factory)

    def parallel_folds(self) -> bool:
        """Whether the model's folds gain from worker processes (``Model.parallel_folds``)."""
        from .plugins import entry

        return bool(getattr(entry("model", self.model_name).factory, "parallel_folds", False))

    def reaches_workers(self) -> bool:
        """Whether worker processes can rebuild this method (see
        :func:`merbench.plugins.reaches_workers`)."""
        from .plugins import reaches_workers

        return all(reaches_workers("preprocessor", s) for s, _ in self.steps) and \
            reaches_workers("model", self.model_name)

    def build_steps(self) -> list[Any]:
        from .plugins import entry

        return [entry("preprocessor", s).factory(**p) for s, p in self.steps]

    def _step_params(self) -> list[tuple[str, dict[str, Any]]]:
        """Each step's full parameters: what it reports, completed by what the recipe gave."""
        return [(name, {**(step.get_params() if hasattr(step, "get_params") else {}), **given})
                for step, (name, given) in zip(self.build_steps(), self.steps)]

    def step_chain_key(self) -> list[Any]:
        """What determines the preprocessed array: step names, versions, full parameters and
        the providing plugin's version."""
        from .plugins import entry

        versions = [getattr(s, "version", "1") for s in self.build_steps()]
        return [[name, version, entry("preprocessor", name).version, jsonable(params)]
                for (name, params), version in zip(self._step_params(), versions)]

    def build_model(self, **runtime: Any) -> Any:
        """A fresh model; runtime values (num_classes, seed, device, ...) are passed only where
        the model accepts them and the user did not set them."""
        from .plugins import entry

        factory = entry("model", self.model_name).factory
        known = init_params(factory)
        params = dict(self.model_params)
        for key, value in runtime.items():
            if (key in known or accepts_any(factory)) and key not in params:
                params[key] = value
        return factory(**params)

    def preprocess(self, raw: Any, steps: list[Any] | None = None) -> np.ndarray:
        """Run the step chain on one raw input (a Clip or an array) to a numeric array."""
        return self.run_steps(raw, steps)[0]

    def run_steps(self, raw: Any, steps: list[Any] | None = None) -> tuple[np.ndarray, list[str]]:
        """(array, notes): the step chain's output and the notes its clips collected on the
        way (fallbacks such as a centre crop or an estimated apex), for the run's record."""
        x, notes = raw, ()
        for step in steps if steps is not None else self.build_steps():
            x = step(x)
            if isinstance(x, Clip):
                notes = x.notes
        if isinstance(x, Clip):
            raise DataError(f"method {self.name!r}: its steps end with a Clip, not an array",
                            "finish the chain with a step that returns an array")
        return np.asarray(x), list(notes)


