"""The ``merbench`` command. Every user error exits non-zero with one clear line; ``--debug``
shows the traceback."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from .errors import ConfigError, MerbenchError

log = logging.getLogger("merbench")


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise ConfigError(f"{what} {v!r} is not NAME=VALUE", f"write it as {what} name=value")
        k, _, val = v.partition("=")
        out[k.strip()] = val.strip()
    return out


class _Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line and "Aborted!")."""

    def __init__(self, command: str | None, stored: int | None = None,
                 total: int | None = None) -> None:
        super().__init__("interrupted")
        self.command, self.stored, self.total = command, stored, total

    def line(self) -> str:
        if self.stored is not None:
            return (f"Interrupted: {self.stored} of {self.total} folds stored; run the same "
                    "command to resume.")
        if self.command == "run":
            return "Interrupted: finished folds are stored; run the same command to resume."
        return "Interrupted."


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # a run's RunInterrupted knows what is stored
            raise _Interrupted(ctx.invoked_subcommand, getattr(exc, "stored", None),
                               getattr(exc, "total", None)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.version_option(package_name="merbench")
def cli(debug: bool, verbose: int) -> None:
    """merbench: benchmark micro-expression recognition under one audited protocol."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command("list")
@click.argument("kind", required=False,
                type=click.Choice(["dataset", "preprocessor", "model", "method", "protocol"]))
@click.option("--verbose", "-v", is_flag=True,
              help="Also show each entry's parameters (`merbench show` explains them).")
def list_cmd(kind: str | None, verbose: bool) -> None:
    """Every registered name with its kind, providing distribution and description."""
    from tabulate import tabulate

    from .plugins import KINDS, entries
    from .protocols import describe, load_protocol, protocol_names

    rows = []
    if kind != "protocol":
        for e in entries(kind) if kind else [e for k in KINDS for e in entries(k)]:
            rows.append([e.kind, e.name, f"{e.distribution} {e.version}", e.description]
                        + ([_brief_params(e)] if verbose else []))
    if kind in (None, "protocol"):
        for name in protocol_names():
            p = load_protocol(name)
            rows.append(["protocol", name, "merbench (protocols/)", describe(p)]
                        + ([""] if verbose else []))
    click.echo(tabulate(rows, headers=["kind", "name", "provided by", "description"]
                        + (["parameters"] if verbose else []), tablefmt="simple"))


def _brief_params(e: Any) -> str:
    """One entry's parameters as ``name=default``; a method's chain and what it sets; a deep
    model's shared training settings are counted, not listed (`merbench show` has them)."""
    import textwrap

    from .params import describe_params, format_value
    from .training import TRAINING_SETTINGS

    if e.kind == "method":
        spec = e.factory
        given = {f"{s}.{k}": v for s, params in spec.steps for k, v in params.items()}
        given.update({f"model.{k}": v for k, v in spec.model[1].items()})
        text = " → ".join([s for s, _ in spec.steps] + [spec.model[0]])
        if given:
            text += "; " + ", ".join(f"{k}={format_value(v)}" for k, v in given.items())
    else:
        params = describe_params(e.factory)
        own = [p for p in params if p.name not in TRAINING_SETTINGS]
        text = ", ".join(f"{p.name}={format_value(p.default)}" for p in own) or "(none)"
        if len(own) < len(params):
            text += f"; + {len(params) - len(own)} training settings"
    return "\n".join(textwrap.wrap(text, 60, break_on_hyphens=False))


def _print_report(result: Any, as_json: bool) -> None:
    from .metrics import report_to_dict

    rep = result.report
    if as_json:
        click.echo(json.dumps({"run": result.run_id, "protocol": result.protocol.label,
                               "method": result.method, "seed": result.seed,
                               **report_to_dict(rep)}, indent=2))
        return
    _echo_scores(rep, f"{result.method} on {result.protocol.label} (seed {result.seed}, "
                      f"run {result.run_id})")


def _echo_scores(rep: dict[str, Any], title: str) -> None:
    from tabulate import tabulate

    p = rep["pooled"]
    fm = rep["fold_mean_std"]
    click.echo(title)
    rows = [["pooled (headline)", p.n, f"{p.uf1:.4f}", f"{p.uar:.4f}", f"{p.accuracy:.4f}"]]
    for d, s in rep.get("per_dataset", {}).items():
        rows.append([d, s.n, f"{s.uf1:.4f}", f"{s.uar:.4f}", f"{s.accuracy:.4f}"])
    if fm["uf1"]["mean"] is not None:
        rows.append([f"per-fold mean ± std ({fm['uf1']['folds']} folds)", "",
                     f"{fm['uf1']['mean']:.4f} ± {fm['uf1']['std']:.4f}",
                     f"{fm['uar']['mean']:.4f} ± {fm['uar']['std']:.4f}",
                     f"{fm['accuracy']['mean']:.4f} ± {fm['accuracy']['std']:.4f}"])
    click.echo(tabulate(rows, headers=["", "n", "UF1", "UAR", "accuracy"], tablefmt="simple"))
    reasons = {"recall": "no true sample", "precision": "never predicted",
               "f1": "neither true nor predicted"}
    for kind, classes in p.undefined.items():
        click.echo(f"undefined {kind} ({reasons[kind]}; left out of its mean): "
                   f"{', '.join(classes)}")


@cli.command()
@click.option("--protocol", "-p", required=True, help="Protocol name or TOML file.")
@click.option("--method", "-m", required=True, help="Method name (see `merbench list method`).")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR",
              help="Root of a dataset release, e.g. casme2=/data/CASME2.")
@click.option("--data-param", "data_param", multiple=True, metavar="NAME.KEY=VALUE",
              help="A dataset parameter, e.g. synthetic.subjects=6.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--seeds", default=None, type=int, help="Run N seeds: seed, seed+1, ...")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter: model.epochs=5, ars.n_key=3.")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--workers", default=1, show_default=True, type=int, help="Parallel fold workers.")
@click.option("--store", default=None, help="Results store (default merbench-results/results.sqlite).")
@click.option("--cache-dir", default=None, help="Preprocessing cache (default ~/.cache/merbench).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the preprocessing cache.")
@click.option("--inputs", default=None, help="Index CSV of precomputed inputs (folder dataset).")
@click.option("--checkpoints", default=None, help="Evaluate per-fold checkpoints from DIR.")
@click.option("--skip-bad", is_flag=True, help="Skip (and record) samples that cannot be read.")
@click.option("--rerun", is_flag=True, help="Run again even if this exact run (same method, "
              "parameters, data and code) is stored as finished.")
@click.option("--limit-folds", type=int, default=None, metavar="N",
              help="Smoke run: only the first N folds (a partial run, never a leaderboard row).")
@click.option("--subjects", default=None, metavar="A,B",
              help="Smoke run: only the folds testing on these subjects (a partial run).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run(protocol: str, method: str, data_root: tuple[str, ...], data_param: tuple[str, ...],
        seed: int, seeds: int | None, sets: tuple[str, ...], device: str, workers: int,
        store: str | None, cache_dir: str | None, no_cache: bool, inputs: str | None,
        checkpoints: str | None, skip_bad: bool, rerun: bool, limit_folds: int | None,
        subjects: str | None, quiet: bool, as_json: bool) -> None:
    """Run METHOD under PROTOCOL; an interrupted run resumes when run again, and a finished
    run with the same method, parameters, data and code is reused (--rerun runs it again)."""
    from .executors import make_executor
    from .methods import parse_value
    from .runner import execute, plan_run

    dparams: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(data_param, "--data-param").items():
        name, _, param = key.partition(".")
        if not param:
            raise ConfigError(f"--data-param {key} needs NAME.KEY", "e.g. synthetic.subjects=6")
        dparams.setdefault(name, {})[param] = parse_value(value)
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")
    _progress_lines(quiet)
    kwargs = dict(protocol=protocol, method=method, data_roots=_pairs(data_root, "--data-root"),
                  overrides=_pairs(sets, "--set"), device=device, store=store,
                  cache_dir=cache_dir, use_cache=not no_cache,
                  quiet=quiet or not sys.stderr.isatty(), dataset_params=dparams, inputs=inputs,
                  checkpoints=checkpoints, skip_bad=skip_bad, rerun=rerun,
                  limit_folds=limit_folds,
                  subjects=[x.strip() for x in subjects.split(",") if x.strip()] if subjects
                  else None)
    plans = [plan_run(seed=seed + k, **kwargs) for k in range(seeds or 1)]
    for plan in plans:
        line = plan.notice()
        if line:
            click.echo(line, err=True)
    with make_executor(workers) as executor:
        results = execute(plans, executor=executor)
    if seeds is not None and as_json:
        from .metrics import report_to_dict

        click.echo(json.dumps([{"run": r.run_id, "protocol": r.protocol.label, "method": r.method,
                                "seed": r.seed, **report_to_dict(r.report)} for r in results],
                              indent=2))
        return
    for result in results:
        _print_report(result, as_json)
        if result.info.get("partial") and not as_json:
            click.echo(_partial_line(result.info))
    if len(results) > 1 and not as_json:
        _echo_seed_summary(results)


def _partial_line(info: dict[str, Any]) -> str:
    limits = ", ".join(f"{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}"
                       for k, v in (info.get("limits") or {}).items())
    return (f"partial run: {info.get('n_folds')} of {info.get('n_folds_protocol')} folds "
            f"({limits}); a smoke test, not a result: leaderboards leave it out")


def _progress_lines(quiet: bool) -> None:
    """Progress lines (one per fold, every few epochs) on stderr when it is not a terminal
    (a log file, CI); a terminal shows progress bars instead."""
    from .logs import show_progress_lines

    show_progress_lines(not quiet and not sys.stderr.isatty())


def _echo_seed_summary(results: list[Any]) -> None:
    """Mean ± std over seeds of the pooled (headline) scores."""
    import numpy as np

    parts = []
    for key in ("uf1", "uar", "accuracy"):
        vals = np.array([getattr(r.report["pooled"], key) for r in results], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        text = "undefined" if not vals.size else \
            f"{vals.mean():.4f} ± {vals.std(ddof=1) if vals.size > 1 else 0.0:.4f}"
        parts.append(f"{key.upper() if key != 'accuracy' else key} {text}")
    click.echo(f"{len(results)} seeds ({', '.join(str(r.seed) for r in results)}): "
               + ", ".join(parts) + " (pooled per seed; mean ± sample std over seeds)")


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--protocol", "-p", required=True)
@click.option("--partial", is_flag=True, help="Score the covered samples and report coverage.")
@click.option("--truth", type=click.Choice(["file", "protocol"]), default="file",
              show_default=True, help="Where the file has a gt column: score against it, or "
              "against the protocol's official labels.")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR",
              help="Read the ground truth from the datasets (protocols without a sample list).")
@click.option("--json", "as_json", is_flag=True)
def score(file: str, protocol: str, partial: bool, truth: str, data_root: tuple[str, ...],
          as_json: bool) -> None:
    """Score predictions made elsewhere (CSV or the official MEGC2019 log format)."""
    from .metrics import report_to_dict
    from .protocols import load_protocol
    from .scoring import score_file

    proto = load_protocol(protocol)
    ground_truth = None
    if data_root:
        ground_truth = {s.id: s.label
                        for s in proto.load_samples(_pairs(data_root, "--data-root"))}
    rep = score_file(file, proto, partial=partial, truth_from=truth, ground_truth=ground_truth)
    cov = rep["coverage"]
    if as_json:
        click.echo(json.dumps({"protocol": proto.label, "file": file, **report_to_dict(rep),
                               "coverage": cov, "truth_from": rep["truth_from"],
                               "gt_disagreements": rep["gt_disagreements"]}, indent=2))
        return
    _echo_scores(rep, f"{file} under {proto.label}: {cov['scored']} of {cov['total']} samples")
    if cov["missing"]:
        click.echo(f"partial: {len(cov['missing'])} samples not predicted "
                   f"({', '.join(cov['missing'][:5])}{' ...' if len(cov['missing']) > 5 else ''})")
    for d in rep["gt_disagreements"]:
        click.echo(f"warning: {d['sample']}: the file's gt is {d['file']!r}, the protocol's is "
                   f"{d['protocol']!r} (scored against the {rep['truth_from']})")


@cli.command()
@click.option("--protocol", "-p", default=None)
@click.option("--format", "fmt", default="md", type=click.Choice(["md", "csv", "latex", "json", "html"]))
@click.option("-o", "--output", default=None, type=click.Path(), help="Write to FILE.")
@click.option("--store", default=None)
@click.option("--no-published", is_flag=True, help="Leave out reported (published) rows.")
def leaderboard(protocol: str | None, fmt: str, output: str | None, store: str | None,
                no_published: bool) -> None:
    """Tables from the results store (reproduced) and published.toml (reported)."""
    from .leaderboard import leaderboard_rows, render
    from .store import DEFAULT_STORE, Store

    path = Path(store) if store else DEFAULT_STORE
    if store and not path.exists():
        raise MerbenchError(f"results store {path} does not exist", "check the --store path")
    st = Store(path) if path.exists() else None
    rows = leaderboard_rows(st, protocol, not no_published)
    if not any(r["source"] == "reproduced" for r in rows):
        what = f"of protocol {protocol} " if protocol else ""
        note = f"no finished runs {what}in {path}"
        if not rows:
            click.echo(note)
            return
        click.echo(f"{note}; showing reported (published) rows only", err=True)
    text = render(rows, fmt)
    if output:
        from .atomic import write_text

        write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@cli.command()
@click.option("-o", "--output", default=None, type=click.Path(), help="Write the tables to DIR.")
@click.option("--store", default=None, help="Results store (default merbench-results/demo.sqlite).")
@click.option("--workers", default=2, show_default=True, type=int)
def demo(output: str | None, store: str | None, workers: int) -> None:
    """Synthetic LOSO for the built-in methods that are fast enough, then the leaderboard."""
    from .demo import run_demo

    def say(line: str) -> None:
        click.echo(line)

    text = run_demo(store=store, output=output, workers=workers, echo=say)
    click.echo(text)
    from .demo import DEFAULT_STORE, PROTOCOL

    where = store or DEFAULT_STORE
    click.echo(f"The demo's runs are in {where} (not the default store):\n"
               f"  merbench leaderboard -p {PROTOCOL} --store {where}\n"
               f"  merbench runs --store {where}")


@cli.group()
def data() -> None:
    """Check and summarise dataset installations."""


def _open(name: str, root: str | None, params: tuple[str, ...]) -> Any:
    import merbench
    from .methods import parse_value

    kwargs = {k: parse_value(v) for k, v in _pairs(params, "--param").items()}
    return merbench.dataset(name, root=root, **kwargs)


@data.command("check")
@click.argument("name")
@click.option("--root", default=None, help="The release root folder.")
@click.option("--param", multiple=True, metavar="KEY=VALUE", help="Dataset parameter.")
def data_check(name: str, root: str | None, param: tuple[str, ...]) -> None:
    """Validate an installation: missing clips or frames, apex outside onset..offset, duplicates,
    unreadable frames. Exits non-zero when something would corrupt a benchmark."""
    ds = _open(name, root, param)
    from .preprocess import progress_bar

    problems = []
    bar = progress_bar(len(ds.samples), f"checking {name}", sys.stderr.isatty())
    for s in ds.samples:
        problems.extend(ds.check(s))
        bar.update(1)
    bar.close()
    click.echo(f"{name}: {len(ds.samples)} samples, {len(ds.subjects())} subjects, "
               f"{len(getattr(ds, 'errata', ()))} errata applied")
    for p in problems:
        click.echo(f"  problem: {p}")
    if problems:
        raise MerbenchError(f"{name}: {len(problems)} problem(s) found",
                            "fix the installation, or run with --skip-bad to skip those samples")
    click.echo("ok: no problems found")


@data.command("summary")
@click.argument("name", required=False)
@click.option("--root", default=None)
@click.option("--labels", default="native", show_default=True, help="Label space.")
@click.option("--protocol", "-p", default=None, help="Summarise a protocol's sample set instead.")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR")
@click.option("--param", multiple=True, metavar="KEY=VALUE")
@click.option("--json", "as_json", is_flag=True)
def data_summary(name: str | None, root: str | None, labels: str, protocol: str | None,
                 data_root: tuple[str, ...], param: tuple[str, ...], as_json: bool) -> None:
    """Counts per class and number of subjects (of a dataset, or of a protocol's samples)."""
    from collections import Counter

    if protocol:
        from .protocols import load_protocol

        proto = load_protocol(protocol)
        samples = proto.load_samples(_pairs(data_root, "--data-root"))
        counts = Counter(s.label for s in samples)
        summary = {"samples": len(samples), "subjects": len({s.group for s in samples}),
                   "classes": {c: counts.get(c, 0) for c in proto.classes}}
        per = {}
        for d in sorted({s.dataset for s in samples}):
            sub = [s for s in samples if s.dataset == d]
            c = Counter(s.label for s in sub)
            per[d] = {"samples": len(sub), "subjects": len({s.subject for s in sub}),
                      "classes": {k: c.get(k, 0) for k in proto.classes}}
        if len(per) > 1:
            summary["datasets"] = per
    elif name:
        summary = _open(name, root, param).summary(labels)
    else:
        raise ConfigError("name a dataset or pass --protocol", "e.g. merbench data summary casme2 --root DIR")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['samples']} samples, {summary['subjects']} subjects")
    for c, n in summary["classes"].items():
        click.echo(f"  {c}: {n}")
    for d, s in summary.get("datasets", {}).items():
        click.echo(f"{d}: {s['samples']} samples, {s['subjects']} subjects, " +
                   ", ".join(f"{c} {n}" for c, n in s["classes"].items()))


@data.command("errata")
@click.argument("name")
@click.option("--root", default=None)
@click.option("--param", multiple=True, metavar="KEY=VALUE")
def data_errata(name: str, root: str | None, param: tuple[str, ...]) -> None:
    """The annotation errata a dataset plugin applies, by sample id, with their sources."""
    ds = _open(name, root, param)
    errata = getattr(ds, "errata", ())
    if not errata:
        click.echo(f"{name}: no errata applied")
    for e in errata:
        click.echo(e.describe())


@cli.command()
@click.option("--method", "-m", required=True)
@click.option("--dataset", "-d", required=True)
@click.option("--data-root", "root", default=None, help="The dataset's release root.")
@click.option("--labels", default="native", show_default=True, help="Label space.")
@click.option("--param", multiple=True, metavar="KEY=VALUE", help="Dataset parameter.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--seed", default=0, type=int)
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("-o", "--output", required=True, type=click.Path(), help="Checkpoint file.")
def train(method: str, dataset: str, root: str | None, labels: str, param: tuple[str, ...],
          sets: tuple[str, ...], seed: int, device: str, output: str) -> None:
    """Train METHOD on every sample of a dataset and save a checkpoint for `merbench predict`."""
    from .deploy import train as do_train
    from .methods import parse_value

    _progress_lines(False)
    facts = do_train(method, dataset, root=root, labels=labels, overrides=_pairs(sets, "--set"),
                     dataset_params={k: parse_value(v) for k, v in _pairs(param, "--param").items()},
                     seed=seed, device=device, output=output, progress=sys.stderr.isatty())
    click.echo(f"wrote {output}: {facts['method']} trained on {facts['trained_on']['samples']} "
               f"{dataset} samples, labels {', '.join(facts['labels'])}")


def _clip_options(fn: Any) -> Any:
    """CLIP is a frames folder, a video file or a dataset's sample id (dataset/subject/clip)."""
    for option in reversed([
            click.option("--onset", type=int, default=None,
                         help="Onset frame number (default: first)."),
            click.option("--apex", type=int, default=None,
                         help="Apex frame number (default: middle)."),
            click.option("--offset", type=int, default=None,
                         help="Offset frame number (default: last)."),
            click.option("--data-root", "data_root", default=None,
                         help="For a sample id: the dataset's release root."),
            click.option("--data-param", "data_param", multiple=True, metavar="KEY=VALUE",
                         help="For a sample id: a dataset parameter, e.g. subjects=4.")]):
        fn = option(fn)
    return fn


def _data_params(values: tuple[str, ...]) -> dict[str, Any]:
    from .methods import parse_value

    return {k: parse_value(v) for k, v in _pairs(values, "--data-param").items()}


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("clip", type=click.Path())
@_clip_options
@click.option("--json", "as_json", is_flag=True)
def predict(checkpoint: str, clip: str, onset: int | None, apex: int | None,
            offset: int | None, data_root: str | None, data_param: tuple[str, ...],
            as_json: bool) -> None:
    """Class probabilities for a new CLIP (frames folder, video, or a sample id such as
    synthetic/s01/neg_01) from a trained CHECKPOINT."""
    from .deploy import predict as do_predict

    out = do_predict(checkpoint, clip, onset, apex, offset, data_root, _data_params(data_param))
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{clip}: {out['prediction']} ({out['method']}; frames {out['onset']}.."
               f"{out['offset']}, apex {out['apex'] if out['apex'] is not None else 'estimated'})")
    for c, p in sorted(out["probabilities"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  {c:>12}: {p:.4f}")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("clip", type=click.Path())
@click.option("-o", "--output", default="explanations", show_default=True, type=click.Path())
@_clip_options
def explain(checkpoint: str, clip: str, output: str, onset: int | None, apex: int | None,
            offset: int | None, data_root: str | None, data_param: tuple[str, ...]) -> None:
    """Save a trained deep model's explanations for CLIP as PNG: Grad-CAM (input beside
    overlay, predicted class and probability, colour bar) and the model's own figures."""
    from .deploy import explain as do_explain

    for path in do_explain(checkpoint, clip, output, onset, apex, offset, data_root,
                           _data_params(data_param)):
        click.echo(f"wrote {path}")


_SHOW_KINDS = {"method": "method", "step": "preprocessor", "preprocessor": "preprocessor",
               "model": "model", "dataset": "dataset"}


@cli.command()
@click.argument("what")
@click.argument("name", required=False)
def show(what: str, name: str | None) -> None:
    """Every parameter of a method (`show METHOD`), step, model or dataset (`show step NAME`,
    `show model NAME`, `show dataset NAME`): default, type, meaning and the exact --set key."""
    from .methods import Method
    from .plugins import entry, registry

    if name is None:
        kind, name = "method", what
        if name not in registry()["method"]:
            others = [k for k, v in _SHOW_KINDS.items()
                      if v != "method" and name in registry()[v] and k != "preprocessor"]
            if others:
                raise ConfigError(f"{name!r} is a {others[0]}, not a method",
                                  f"use `merbench show {others[0]} {name}`")
    elif what in _SHOW_KINDS:
        kind = _SHOW_KINDS[what]
    else:
        raise ConfigError(f"cannot show {what!r}",
                          "use `merbench show METHOD` or `merbench show step|model|dataset NAME`")
    e = entry(kind, name)
    click.echo(f"{e.kind if e.kind != 'preprocessor' else 'step'} {e.name}: {e.description}")
    click.echo(f"provided by {e.distribution} {e.version} (plugin {e.plugin})")
    if kind == "method":
        meth = Method.named(name, {})
        for part, part_name, factory, rows in _method_rows(meth):
            click.echo("")
            click.echo(f"{part} {part_name} ({factory.__module__}.{factory.__qualname__}"
                       + (f", version {factory.version}" if part == "step" else "") + ")")
            _echo_params(rows)
        click.echo("")
        click.echo("set by the runner: num_classes (the protocol's classes), seed (--seed and "
                   "the fold), device (--device)")
        example = next((k for _, _, _, rows in _method_rows(meth) for k, _, _ in rows), None)
        if example:
            click.echo(f"e.g. merbench run -p PROTOCOL -m {name} --set {example}=VALUE")
        return
    from .params import describe_params

    from .protocols import _needs_root

    prefix = {"preprocessor": f"{name}.", "model": "model."}.get(kind, f"{name}.")
    rows = [(prefix + p.name, p.default, p) for p in describe_params(e.factory)]
    click.echo("")
    _echo_params(rows, "--data-param key" if kind == "dataset" else "--set key")
    if kind != "dataset":
        click.echo(f"(in a method using it: --set {prefix}KEY=VALUE)")
    elif _needs_root(name):
        click.echo(f"(the release folder: --data-root {name}=DIR)")


def _method_rows(meth: Any) -> list[Any]:
    from .params import method_parts

    return method_parts(meth)


def _echo_params(rows: list[tuple[str, Any, Any]], key: str = "--set key") -> None:
    from tabulate import tabulate

    from .params import format_value

    if not rows:
        click.echo("  (no parameters)")
        return
    table = []
    for name, value, info in rows:
        shown = format_value(value)
        if not info.required and not _same_value(value, info.default):
            shown += f" (default {format_value(info.default)})"
        table.append([name, shown, info.type, info.help])
    click.echo(tabulate(table, headers=[key, "value", "type", "meaning"],
                        tablefmt="simple", disable_numparse=True))


def _same_value(a: Any, b: Any) -> bool:
    from .base import jsonable

    return bool(jsonable(a) == jsonable(b))


def _open_store(store: str | None) -> Any:
    from .store import DEFAULT_STORE, Store

    path = Path(store) if store else DEFAULT_STORE
    if not path.exists():
        raise MerbenchError(f"results store {path} does not exist",
                            "run something first, or point --store at an existing store")
    return Store(path)


def _flags(rec: Any) -> str:
    """What a reader must know about a run before trusting its number."""
    info = rec.info
    flags = []
    if info.get("partial"):
        flags.append(f"partial ({info.get('n_folds')} of {info.get('n_folds_protocol')} folds)")
    if info.get("skipped"):
        flags.append(f"{len(info['skipped'])} skipped")
    for kind, n in sorted((info.get("fallbacks") or {}).items()):
        flags.append(f"{n} {kind}")
    if info.get("trained") is False:
        flags.append("published weights")
    if info.get("leaks_identity"):
        flags.append("leaks identity")
    return ", ".join(flags)


@cli.group(invoke_without_command=True)
@click.option("--store", default=None, help="Results store (default merbench-results/results.sqlite).")
@click.option("--protocol", "-p", default=None, help="Only runs of this protocol.")
@click.pass_context
def runs(ctx: click.Context, store: str | None, protocol: str | None) -> None:
    """The runs of a results store with their status (`merbench runs show RUN` for one)."""
    ctx.obj = store
    if ctx.invoked_subcommand is not None:
        return
    from tabulate import tabulate

    from .runner import stored_report

    st = _open_store(store)
    rows = []
    for rec in st.runs(status=None):
        if protocol and protocol not in (rec.protocol, rec.info.get("protocol_name")):
            continue
        done = len(st.done_folds(rec.id))
        uf1 = stored_report(st, rec)[0]["pooled"].uf1 if done else float("nan")
        rows.append([rec.id, rec.status, rec.protocol, rec.method, rec.seed,
                     f"{done}/{rec.info.get('n_folds', '?')}",
                     "" if uf1 != uf1 else f"{uf1:.4f}", rec.started.replace("T", " ")[:16],
                     _flags(rec)])
    if not rows:
        click.echo(f"no runs{f' of protocol {protocol}' if protocol else ''} in {st.path}")
        return
    click.echo(tabulate(rows, headers=["run", "status", "protocol", "method", "seed", "folds",
                                       "UF1", "started (UTC)", "flags"], tablefmt="simple",
                        disable_numparse=True))


@runs.command("show")
@click.argument("run_id", required=False)
@click.option("--store", default=None, help="Results store (default merbench-results/results.sqlite).")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str | None, store: str | None) -> None:
    """One run (RUN: an id or its first characters; default: the latest run): what ran
    (method, parameters, versions, code), its data facts (skipped samples with reasons,
    fallbacks) and a per-fold table."""
    from tabulate import tabulate

    from .params import format_value
    from .runner import stored_report

    st = _open_store(store or ctx.obj)
    if run_id is None:
        every = st.runs(status=None)
        if not every:
            raise MerbenchError(f"no runs in {st.path}", "run something first")
        run_id = every[-1].id
    rec = st.run(run_id)
    folds = st.fold_info(rec.id)
    names = st.done_folds(rec.id)
    click.echo(f"run {rec.id}: {rec.method} on {rec.protocol}, seed {rec.seed}, {rec.status}"
               + (f" ({_flags(rec)})" if _flags(rec) else ""))
    click.echo(f"started {rec.started}, ended {rec.ended or '-'}; {rec.device}; host {rec.host}")
    click.echo(f"merbench {rec.versions.get('merbench')}, code {rec.info.get('code', '-')}, "
               f"git {rec.git_commit or '-'}")
    click.echo("\nparameters:")
    for key, value in sorted(rec.params.items()):
        click.echo(f"  {key} = {format_value(value)}")
    info = rec.info
    for key in ("inputs", "checkpoints", "data_roots", "dataset_params", "limits"):
        if info.get(key):
            click.echo(f"{key.replace('_', ' ')}: {info[key]}")
    if info.get("skipped"):
        click.echo(f"\nskipped samples ({len(info['skipped'])}):")
        for sid, reason in sorted(info["skipped"].items()):
            click.echo(f"  {sid}: {reason}")
    if info.get("fallbacks"):
        click.echo("\nfallbacks: " + ", ".join(f"{k} {n}" for k, n in
                                                sorted(info["fallbacks"].items())))
    if not folds:
        click.echo("\nno fold stored yet")
        return
    per_fold = stored_report(st, rec)[0]["per_fold"]
    table = []
    for index in sorted(folds):
        fi, name = folds[index], names[index]
        sc = per_fold.get(name)
        table.append([index, name, fi.get("n_train", ""), fi.get("n_test", ""),
                      fi.get("seconds", ""),
                      "" if fi.get("final_loss") is None else f"{fi['final_loss']:.4f}",
                      "" if sc is None or sc.uf1 != sc.uf1 else f"{sc.uf1:.4f}",
                      "" if sc is None or sc.uar != sc.uar else f"{sc.uar:.4f}"])
    click.echo("")
    click.echo(tabulate(table, headers=["#", "fold", "n_train", "n_test", "seconds",
                                        "final loss", "UF1", "UAR"], tablefmt="simple",
                        disable_numparse=True))


@cli.command("check-plugin")
@click.argument("plugin")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Method-style overrides for the inputs and models, e.g. model.epochs=2, "
              "face-crop.fallback=centre.")
@click.option("--data-param", "data_param", multiple=True, metavar="KEY=VALUE",
              help="Parameters of the synthetic input set, e.g. size=96.")
@click.option("--seed", default=0, show_default=True, type=int)
def check_plugin_cmd(plugin: str, sets: tuple[str, ...], data_param: tuple[str, ...],
                     seed: int) -> None:
    """Check the steps and models of PLUGIN (an installed plugin's name or a module path):
    parameters round trip, determinism under a seed, probability shapes, state round trip,
    cache-key stability. Exits non-zero when a check fails."""
    from .checks import check_plugin, format_results
    from .methods import parse_value

    results = check_plugin(plugin, {k: parse_value(v) for k, v in _pairs(sets, "--set").items()},
                           {k: parse_value(v) for k, v in
                            _pairs(data_param, "--data-param").items()}, seed,
                           progress=lambda line: click.echo(line, err=True))
    click.echo(format_results(results))
    failed = [r for r in results if r.ok is False]
    if failed:
        raise MerbenchError(f"{plugin}: {len(failed)} of {len(results)} checks failed",
                            "see the detail column")
    click.echo(f"{plugin}: all {sum(r.ok is True for r in results)} checks passed"
               + (f" ({sum(r.ok is None for r in results)} skipped)"
                  if any(r.ok is None for r in results) else ""))


def _install_plugin_commands() -> None:
    from .plugins import call_command_hooks

    call_command_hooks(cli)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        _install_plugin_commands()
        cli.main(args=argv, prog_name="merbench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except _Interrupted as exc:
        click.echo(exc.line(), err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other user error
        command = exc.ctx.command_path if exc.ctx is not None else "merbench"
        click.echo(f"Error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MerbenchError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a bug, but still one line without --debug
        if debug:
            raise
        click.echo(f"Internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                   "traceback and please report it)", err=True)
        sys.exit(1)
    finally:  # an in-process caller (tests, a notebook) keeps its own logging
        from .logs import show_progress_lines

        show_progress_lines(False)
