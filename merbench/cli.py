"""The ``merbench`` command. Every user error exits non-zero with one clear line; ``--debug``
shows the traceback."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

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


def _executor_options(fn: Any) -> Any:
    """--executor and the Ray options, shared by `run` and `grid` (passed on as
    ``**executor_opts``)."""
    options = [
        click.option("--executor", default="local", show_default=True, envvar="MERBENCH_EXECUTOR",
                     type=click.Choice(["local", "ray"]),
                     help="Where folds run: local (serial, or --workers processes) or ray (a Ray "
                          "cluster, or a local Ray instance). Env: MERBENCH_EXECUTOR."),
        click.option("--ray-address", default=None, envvar="RAY_ADDRESS", metavar="auto|HOST:PORT",
                     help="Ray cluster to join (auto: the one `ray start` runs here); default: "
                          "start a local Ray instance. Env: RAY_ADDRESS."),
        click.option("--cpus-per-fold", default=None, type=float,
                     help="CPUs each fold task asks Ray for (and torch threads) [1]."),
        click.option("--gpus-per-fold", default=None, type=float,
                     help="GPUs each fold task asks Ray for; 0.25 lets four folds share a GPU [0]."),
        click.option("--max-retries", default=None, type=int,
                     help="Ray: runs of a task again after its worker died [3]."),
        click.option("--ray-preprocess", default=None, type=click.Choice(["cluster", "driver"]),
                     help="Ray: preprocess on the cluster (data and cache on a shared "
                          "filesystem) or in this process (data here only) [cluster]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


#: --workers of the commands that run folds besides `run` (whose help explains it)
_workers_option = click.option("--workers", default="auto", show_default=True, metavar="auto|N",
                               help="Fold workers (see `merbench run --help`).")


@contextlib.contextmanager
def _executor_from(workers: int | str, device: str, opts: dict[str, Any]) -> Iterator[Any]:
    """The executor the options ask for (None: the runner's own local one), closed after."""
    from .executors import make_executor

    ray_opts = {k: v for k, v in opts.items() if k != "executor" and v is not None}
    if opts["executor"] != "ray":
        ctx = click.get_current_context()
        given = [k for k in ray_opts if ctx.get_parameter_source(k) !=
                 click.core.ParameterSource.ENVIRONMENT]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} is an option of the Ray executor",
                              "add --executor ray (or set MERBENCH_EXECUTOR=ray)")
        yield None
        return
    if device == "cuda" and not ray_opts.get("gpus_per_fold"):
        raise ConfigError("--device cuda under Ray needs GPUs for the folds",
                          "add --gpus-per-fold (e.g. 1, or 0.25 to share a GPU)")
    executor = make_executor(workers, "ray", **ray_opts)
    try:
        yield executor
    finally:
        executor.close()


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
@click.option("--workers", default="auto", show_default=True, metavar="auto|N",
              help="Fold workers: auto = one process per physical core for small deep models "
              "(one torch thread each), in this process for the rest; 1 = serial; N processes.")
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
@_executor_options
def run(protocol: str, method: str, data_root: tuple[str, ...], data_param: tuple[str, ...],
        seed: int, seeds: int | None, sets: tuple[str, ...], device: str, workers: str,
        store: str | None, cache_dir: str | None, no_cache: bool, inputs: str | None,
        checkpoints: str | None, skip_bad: bool, rerun: bool, limit_folds: int | None,
        subjects: str | None, quiet: bool, as_json: bool, **executor_opts: Any) -> None:
    """Run METHOD under PROTOCOL; an interrupted run resumes when run again, and a finished
    run with the same method, parameters, data and code is reused (--rerun runs it again)."""
    from .executors import make_executor
    from .runner import execute, plan_run

    dparams = _data_params(data_param)
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
    # the executor first: a bad --workers or Ray option is refused before a run is recorded
    with _executor_from(workers, device, executor_opts) as cluster:
        with cluster or make_executor(workers) as executor:
            plans = [plan_run(seed=seed + k, **kwargs) for k in range(seeds or 1)]
            for plan in plans:
                line = plan.notice()
                if line:
                    click.echo(line, err=True)
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
@click.option("--truth", type=click.Choice(["protocol", "file"]), default="protocol",
              show_default=True, help="Score against the protocol's official labels (a gt "
              "column that disagrees is an error), or against the file's gt column.")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR",
              help="Read the ground truth from the datasets (protocols without a sample list).")
@click.option("--data-param", "data_param", multiple=True, metavar="NAME.KEY=VALUE",
              help="A dataset parameter the predictions were made with (as for `run`).")
@click.option("--json", "as_json", is_flag=True)
def score(file: str, protocol: str, partial: bool, truth: str, data_root: tuple[str, ...],
          data_param: tuple[str, ...], as_json: bool) -> None:
    """Score predictions made elsewhere (CSV or the official MEGC2019 log format)."""
    from .metrics import report_to_dict
    from .protocols import load_protocol
    from .scoring import score_file

    proto = load_protocol(protocol)
    ground_truth = None
    if data_root or data_param or (proto.sample_list is None and not proto.roots_needed()):
        # no official list: the labels come from the datasets (those without files need no root)
        datasets = proto.open_datasets(_pairs(data_root, "--data-root"), _data_params(data_param))
        ground_truth = {s.id: s.label for s in proto.load_samples(datasets=datasets)}
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


def _board_options(f: Any) -> Any:
    """Options shared by `leaderboard`, `site` and `compare`: the bootstrap and the store."""
    for opt in reversed([
        click.option("--store", default=None, help="Results store (default "
                      "merbench-results/results.sqlite)."),
        click.option("--bootstrap", "n_boot", default=2000, show_default=True, type=int,
                     help="Subject-level bootstrap resamples for the intervals (0: none)."),
        click.option("--bootstrap-seed", "boot_seed", default=0, show_default=True, type=int),
        click.option("--level", default=0.95, show_default=True, type=float,
                     help="Confidence level of the intervals."),
    ]):
        f = opt(f)
    return f


def _open_store(store: str | None, must_exist: bool = False) -> Any:
    from .store import DEFAULT_STORE, Store

    path = Path(store) if store else DEFAULT_STORE
    if (store or must_exist) and not path.exists():
        raise MerbenchError(f"results store {path} does not exist",
                            "run something first, or point --store at an existing store")
    return Store(path, readonly=True) if path.exists() else None  # leaderboards only read


@cli.command()
@click.option("--protocol", "-p", default=None)
@click.option("--format", "fmt", default="md",
              type=click.Choice(["md", "csv", "latex", "json", "html", "site"]))
@click.option("-o", "--output", default=None, type=click.Path(),
              help="Write to FILE (a folder for --format site).")
@click.option("--no-published", is_flag=True, help="Leave out reported (published) rows.")
@click.option("--interval", default="bracket", show_default=True,
              type=click.Choice(["bracket", "pm"]), help="Intervals as [lo, hi] or ± half-width.")
@click.option("--include-partial", is_flag=True, help="Show partial (smoke) runs, flagged.")
@_board_options
def leaderboard(protocol: str | None, fmt: str, output: str | None, no_published: bool,
                interval: str, include_partial: bool, store: str | None, n_boot: int,
                boot_seed: int, level: float) -> None:
    """Tables from the results store (reproduced) and published.toml (reported)."""
    from .leaderboard import leaderboard_rows, render

    st = _open_store(store)
    if fmt == "site":
        if not output:
            raise ConfigError("--format site writes a folder", "pass -o DIR")
        _write_site(st, output, protocol, not no_published, n_boot, boot_seed, level,
                    include_partial, interval)
        return
    rows = leaderboard_rows(st, protocol, not no_published, n_boot, boot_seed, level,
                            include_partial)
    note = None
    if not any(r["source"] == "reproduced" for r in rows):
        from .store import DEFAULT_STORE

        what = f"of protocol {protocol} " if protocol else ""
        note = f"no finished runs {what}in {st.path if st else store or DEFAULT_STORE}"
        if not rows and fmt != "json" and not output:  # (json stays parseable: [])
            click.echo(note)
            return
    text = render(rows, fmt, interval)
    if output:
        from .atomic import write_text

        write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text)
    if note:  # after the output, so that a failed write is the only line
        click.echo(f"{note}; showing reported (published) rows only" if rows else note, err=True)


@cli.command()
@click.option("-o", "--output", default=None, type=click.Path(), help="Write the tables to DIR.")
@click.option("--store", default=None, help="Results store (default merbench-results/demo.sqlite).")
@_workers_option
def demo(output: str | None, store: str | None, workers: str) -> None:
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
@click.option("--faces", is_flag=True, help="Also look for a face on each onset frame "
              "(the face-crop step's detector).")
def data_check(name: str, root: str | None, param: tuple[str, ...], faces: bool) -> None:
    """Validate an installation: missing clips or frames, apex outside onset..offset, duplicates,
    unreadable, truncated or placeholder frames, unknown labels; with --faces, a face on every
    onset frame. Exits non-zero when something would corrupt a benchmark or fail a run."""
    ds = _open(name, root, param)
    from .preprocess import progress_bar

    face = _face_step() if faces else None
    problems = dict.fromkeys(ds.label_problems())  # ordered, each problem once
    bar = progress_bar(len(ds.samples), f"checking {name}", sys.stderr.isatty())
    no_face = 0
    for s in ds.samples:
        found = ds.check(s, face) if face is not None else ds.check(s)  # plugins' own check()
        no_face += any("no face found" in p for p in found)
        problems.update(dict.fromkeys(found))
        bar.update(1)
    bar.close()
    click.echo(f"{name}: {len(ds.samples)} samples, {len(ds.subjects())} subjects, "
               f"{len(getattr(ds, 'errata', ()))} errata applied")
    for space in ds.label_spaces:
        left = {lab: len(ids) for lab, ids in ds.dropped(space).items()}
        if left and space != "native":
            click.echo(f"  label space {space} leaves out {sum(left.values())} samples: "
                       + ", ".join(f"{lab or '(empty)'} {n}" for lab, n in sorted(left.items())))
    if faces:
        click.echo(f"  faces: found on the onset frame of {len(ds.samples) - no_face} of "
                   f"{len(ds.samples)} samples")
    for note in getattr(ds, "notes", lambda: [])():
        click.echo(f"  note: {note}")
    for p in problems:
        click.echo(f"  problem: {p}")
    if problems:
        raise MerbenchError(f"{name}: {len(problems)} problem(s) found",
                            "fix the installation, or run with --skip-bad to skip those samples")
    click.echo("ok: no problems found")


def _face_step() -> Any:
    """The registered face-crop step, asked to look on the onset frame only."""
    import merbench

    try:
        return merbench.preprocessor("face-crop", search=0)
    except MerbenchError as exc:
        raise ConfigError(f"--faces needs the face-crop step: {exc}",
                          "install the plugin that provides face-crop") from exc


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
    if summary.get("left_out"):
        click.echo(f"left out by label space {labels}: " + ", ".join(
            f"{lab or '(empty)'} {n}" for lab, n in summary["left_out"].items()))
    for lab, ids in summary.get("unknown", {}).items():
        click.echo(f"warning: label {lab!r} is unknown to label space {labels}: "
                   f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")
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


def _flat_params(values: tuple[str, ...]) -> dict[str, Any]:
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

    out = do_predict(checkpoint, clip, onset, apex, offset, data_root, _flat_params(data_param))
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
                           _flat_params(data_param)):
        click.echo(f"wrote {path}")
        if path.suffix == ".txt":  # a model's explanation in words (e.g. nearest prototypes)
            click.echo(path.read_text().rstrip())


@cli.command("explain-run")
@click.argument("run_id")
@click.option("--store", default=None, help="Results store (default merbench-results/results.sqlite).")
@click.option("-o", "--output", default=None, type=click.Path(),
              help="Folder for the figures (default explanations/RUN_ID).")
def explain_run_cmd(run_id: str, store: str | None, output: str | None) -> None:
    """Figures over a stored run's test samples, drawn by its model (e.g. a prototype network's
    t-SNE of test latents, decoded prototypes, nearest prototypes)."""
    from .explain_run import explain_run

    for path in explain_run(run_id, store, output):
        click.echo(f"wrote {path}")


# -- leaderboard site, paired comparison, one-parameter sweep (kept together) -------------------
def _write_site(st: Any, output: str, protocol: str | None, published: bool, n_boot: int,
                boot_seed: int, level: float, include_partial: bool, interval: str) -> None:
    from .site import write_site

    paths = write_site(st, output, protocol, published, n_boot, boot_seed, level,
                       include_partial, interval)
    click.echo(f"wrote {paths[0]} ({len(paths) - 1} protocol pages; open it in a browser)")


@cli.command()
@click.option("-o", "--output", required=True, type=click.Path(), help="The site's folder.")
@click.option("--protocol", "-p", default=None, help="Only this protocol.")
@click.option("--no-published", is_flag=True, help="Leave out reported (published) rows.")
@click.option("--interval", default="bracket", show_default=True,
              type=click.Choice(["bracket", "pm"]))
@click.option("--include-partial", is_flag=True, help="Show partial (smoke) runs, flagged.")
@_board_options
def site(output: str, protocol: str | None, no_published: bool, interval: str,
         include_partial: bool, store: str | None, n_boot: int, boot_seed: int,
         level: float) -> None:
    """A static leaderboard site (works from file://): protocol tables, one page per run."""
    _write_site(_open_store(store), output, protocol, not no_published, n_boot, boot_seed, level,
                include_partial, interval)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--protocol", "-p", required=True)
@click.option("--json", "as_json", is_flag=True)
@_board_options
def compare(a: str, b: str, protocol: str, as_json: bool, store: str | None, n_boot: int,
            boot_seed: int, level: float) -> None:
    """Paired test of A vs B (run ids or method names) on the same samples: subject-level
    bootstrap of ΔUF1/ΔUAR and McNemar's test."""
    from .leaderboard import compare as do_compare

    if n_boot < 1:
        raise ConfigError("compare needs --bootstrap of at least 1", "e.g. --bootstrap 2000")
    out = do_compare(_open_store(store, must_exist=True), protocol, a, b, n_boot, boot_seed,
                     level)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    bs = out["bootstrap"]
    pct = round(100 * level)
    click.echo(f"A: {out['A']['label']}  UF1 {bs['UF1']['A']:.4f}  UAR {bs['UAR']['A']:.4f}")
    click.echo(f"B: {out['B']['label']}  UF1 {bs['UF1']['B']:.4f}  UAR {bs['UAR']['B']:.4f}")
    click.echo(f"same {out['samples']} samples, {bs['subjects']} subjects; paired subject-level "
               f"bootstrap, B={bs['n_boot']}, seed {bs['seed']}")
    for m in ("UF1", "UAR"):
        t = bs[m]
        lo, hi = t["interval"]
        click.echo(f"Δ{m} (A − B) = {t['delta']:+.4f}, {pct}% CI [{lo:+.4f}, {hi:+.4f}], "
                   f"p = {t['p']:.4f}")
    mc = out["mcnemar"]
    if mc is None:
        click.echo("McNemar: needs one run per side (name run ids to get it)")
    else:
        click.echo(f"McNemar (exact binomial): A right & B wrong {mc['a_only']}, A wrong & B "
                   f"right {mc['b_only']}, p = {mc['p_exact']:.4g} (mid-p {mc['p_mid']:.4g})")


@cli.command()
@click.option("--protocol", "-p", required=True)
@click.option("--method", "-m", required=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2,...", required=True,
              help="The swept parameter with its values (one --set); other --set fix a value.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--seeds", default=1, show_default=True, type=int, help="Seeds per value.")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR")
@click.option("--data-param", "data_param", multiple=True, metavar="NAME.KEY=VALUE")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@_workers_option
@click.option("--store", default=None)
@click.option("--cache-dir", default=None)
@click.option("-o", "--output", default="merbench-results/sweeps", show_default=True,
              type=click.Path(), help="Folder for the figure and the tables.")
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, type=int)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def sweep(protocol: str, method: str, sets: tuple[str, ...], seed: int, seeds: int,
          data_root: tuple[str, ...], data_param: tuple[str, ...], device: str,
          workers: int | str, store: str | None, cache_dir: str | None, output: str, n_boot: int,
          quiet: bool) -> None:
    """A one-parameter ablation: a run per value (and seed), a figure and a table."""
    from .sweep import parse_sweep, sweep as do_sweep

    key, values, fixed = parse_sweep(_pairs(sets, "--set"))
    result = do_sweep(protocol, method, key, values, fixed, seed=seed, seeds=seeds,
                      output=output, store=store, n_boot=n_boot, echo=click.echo,
                      data_roots=_pairs(data_root, "--data-root"),
                      dataset_params=_data_params(data_param), device=device, workers=workers,
                      cache_dir=cache_dir, quiet=quiet or not sys.stderr.isatty())
    from .sweep import sweep_table

    click.echo(sweep_table(result))
    for path in result["paths"]:
        click.echo(f"wrote {path}")


def _data_params(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """--data-param NAME.KEY=VALUE options as {dataset: {key: value}}."""
    from .methods import parse_value

    out: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(values, "--data-param").items():
        name, _, param = key.partition(".")
        if not param:
            raise ConfigError(f"--data-param {key} needs NAME.KEY", "e.g. synthetic.subjects=6")
        out.setdefault(name, {})[param] = parse_value(value)
    return out


def _grid_settings(methods: list[str], sets: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    """Per method, every combination of the --set values that apply to it. A key applies to
    the methods that have it (model.epochs to the deep models of a grid, ars.n_key to the ARS
    ones); a key no method has is refused, with the first method's reason."""
    from itertools import product

    from .methods import Method
    from .sweep import split_values

    sweeps = {k: split_values(v, k) for k, v in _pairs(sets, "--set").items()}
    takes: dict[str, set[str]] = {}
    for key, values in sweeps.items():
        errors = {}
        for method in methods:
            try:
                Method.named(method, {key: values[0]})
            except ConfigError as exc:
                errors[method] = exc
        if len(errors) == len(methods):
            first = errors[methods[0]]
            raise ConfigError(f"--set {key} fits none of the grid's methods; {first.problem}",
                              first.fix)
        takes[key] = set(methods) - set(errors)
    out = {}
    for method in methods:
        keys = [k for k in sweeps if method in takes[k]]
        out[method] = [dict(zip(keys, combo)) for combo in product(*(sweeps[k] for k in keys))]
    return out


def _grid_table(results: list[Any], settings: list[dict[str, str]]) -> str:
    """One row per configuration (protocol, method, settings): UF1/UAR mean ± std over its
    seeds, and how many of its runs finished."""
    from tabulate import tabulate

    from .leaderboard import _mean_std

    groups: dict[tuple[str, str, str], list[Any]] = {}
    for result, overrides in zip(results, settings):
        shown = " ".join(f"{k}={v}" for k, v in overrides.items())
        groups.setdefault((result.protocol.label, result.method, shown), []).append(result)

    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        m = _mean_std(values)
        return f"{m['mean']:.4f}" if len(values) == 1 else f"{m['mean']:.4f} ± {m['std']:.4f}"

    rows = []
    for (proto, method, shown), runs in groups.items():
        ok = [r for r in runs if r.error is None]
        rows.append([proto, method, shown, ",".join(str(r.seed) for r in runs),
                     cell([r.uf1 for r in ok]), cell([r.uar for r in ok]),
                     f"{len(ok)}/{len(runs)}" + ("" if len(ok) == len(runs) else " (failed: " +
                                                  ", ".join(r.run_id[:8] for r in runs
                                                            if r.error) + ")")])
    return tabulate(rows, headers=["protocol", "method", "settings", "seeds", "UF1", "UAR",
                                   "finished"], tablefmt="simple")


@cli.command()
@click.option("--protocol", "-p", "protocols", multiple=True, required=True,
              help="Protocol name or TOML file; repeat for several.")
@click.option("--method", "-m", "methods", multiple=True, required=True,
              help="Method name; repeat for several.")
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2,...",
              help="A parameter and its values; every combination is a run. Applies to the "
                   "methods that have KEY.")
@click.option("--seed", default=0, show_default=True, type=int, help="First seed.")
@click.option("--seeds", default=1, show_default=True, type=int,
              help="Seeds per configuration: seed, seed+1, ...")
@click.option("--data-root", "data_root", multiple=True, metavar="NAME=DIR",
              help="Root of a dataset release, e.g. casme2=/data/CASME2.")
@click.option("--data-param", "data_param", multiple=True, metavar="NAME.KEY=VALUE",
              help="A dataset parameter, e.g. synthetic.subjects=6.")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@_workers_option
@click.option("--store", default=None, help="Results store (default merbench-results/results.sqlite).")
@click.option("--cache-dir", default=None, help="Preprocessing cache (default ~/.cache/merbench).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the preprocessing cache.")
@click.option("--inputs", default=None, help="Index CSV of precomputed inputs (folder dataset).")
@click.option("--skip-bad", is_flag=True, help="Skip (and record) samples that cannot be read.")
@click.option("--rerun", is_flag=True, help="Run again even the runs that are finished.")
@click.option("--fail-fast", is_flag=True,
              help="Stop the whole grid at the first failure (default: the other runs go on).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print every run's report as JSON.")
@_executor_options
def grid(protocols: tuple[str, ...], methods: tuple[str, ...], sets: tuple[str, ...], seed: int,
         seeds: int, data_root: tuple[str, ...], data_param: tuple[str, ...], device: str,
         workers: int | str, store: str | None, cache_dir: str | None, no_cache: bool,
         inputs: str | None, skip_bad: bool, rerun: bool, fail_fast: bool, quiet: bool,
         as_json: bool, **executor_opts: Any) -> None:
    """Every combination of PROTOCOLs x METHODs x --set values x seeds, scheduled together:
    all their folds share one executor (a cluster stays busy across runs), every run is stored
    and resumable like a single run, one table sums them up. A run that fails does not stop
    the others; the command then exits non-zero naming it, and running it again resumes."""
    from .runner import execute, plan_run
    from .store import DEFAULT_STORE, Store

    from .executors import parse_workers

    if seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
    workers = parse_workers(workers)  # refused before any run is recorded
    methods_ = list(dict.fromkeys(methods))
    settings = _grid_settings(methods_, sets)
    st = Store(store or DEFAULT_STORE)
    common = dict(data_roots=_pairs(data_root, "--data-root"),
                  dataset_params=_data_params(data_param), device=device, store=st,
                  cache_dir=cache_dir, use_cache=not no_cache,
                  quiet=quiet or not sys.stderr.isatty(), inputs=inputs, skip_bad=skip_bad,
                  rerun=rerun)
    plans, shown = [], []
    for protocol in dict.fromkeys(protocols):  # every run is planned (and checked) first
        for method in methods_:
            for overrides in settings[method]:
                for k in range(seeds):
                    plan = plan_run(protocol=protocol, method=method, overrides=overrides,
                                    seed=seed + k, **common)
                    if all(p.run_id != plan.run_id for p in plans):  # model.C=0.1,.1: one run
                        plans.append(plan)
                        shown.append(overrides)
    folds = sum(len(p.todo) for p in plans if not p.reused)
    click.echo(f"grid: {len(plans)} runs ({sum(p.reused for p in plans)} already finished, "
               f"{sum(bool(p.resumed) and not p.reused for p in plans)} resumed), {folds} folds "
               f"to run", err=True)
    with _executor_from(workers, device, executor_opts) as executor:
        results = execute(plans, executor=executor, workers=workers, keep_going=not fail_fast)
    if as_json:
        from .metrics import report_to_dict

        click.echo(json.dumps([{"run": r.run_id, "protocol": r.protocol.label,
                                "method": r.method, "seed": r.seed, "settings": o,
                                "error": r.error, **(report_to_dict(r.report) if r.report else {})}
                               for r, o in zip(results, shown)], indent=2))
    else:
        click.echo(_grid_table(results, shown))
    failed = [r for r in results if r.error]
    if failed:
        first = failed[0]
        raise MerbenchError(f"{len(failed)} of {len(results)} runs failed; first: run "
                            f"{first.run_id[:8]} ({first.method}, seed {first.seed}): "
                            f"{first.error}", "fix it and run the same command again: finished "
                            "runs are reused, failed ones resume at their unfinished folds")
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


def _flags(st: Any, rec: Any) -> str:
    """What a reader must know about a run before trusting its number (the leaderboard's
    data-quality flags)."""
    from .leaderboard import flags, quality

    return "; ".join(flags(quality(st, [rec])))


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

    st = _open_store(store, must_exist=True)
    rows = []
    for rec in st.runs(status=None):
        if protocol and protocol not in (rec.protocol, rec.info.get("protocol_name")):
            continue
        done = len(st.done_folds(rec.id))
        uf1 = stored_report(st, rec)[0]["pooled"].uf1 if done else float("nan")
        rows.append([rec.id, rec.status, rec.protocol, rec.method, rec.seed,
                     f"{done}/{rec.info.get('n_folds', '?')}",
                     "" if uf1 != uf1 else f"{uf1:.4f}", rec.started.replace("T", " ")[:16],
                     _flags(st, rec)])
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

    st = _open_store(store or ctx.obj, must_exist=True)
    if run_id is None:
        every = st.runs(status=None)
        if not every:
            raise MerbenchError(f"no runs in {st.path}", "run something first")
        run_id = every[-1].id
    rec = st.run(run_id)
    folds = st.fold_info(rec.id)
    names = st.done_folds(rec.id)
    click.echo(f"run {rec.id}: {rec.method} on {rec.protocol}, seed {rec.seed}, {rec.status}"
               + (f" ({_flags(st, rec)})" if _flags(st, rec) else ""))
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
