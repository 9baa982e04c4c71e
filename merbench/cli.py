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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
def list_cmd(kind: str | None) -> None:
    """Every registered name with its kind, providing distribution and description."""
    from tabulate import tabulate

    from .plugins import KINDS, entries
    from .protocols import describe, load_protocol, protocol_names

    rows = []
    if kind != "protocol":
        for e in entries(kind) if kind else [e for k in KINDS for e in entries(k)]:
            rows.append([e.kind, e.name, f"{e.distribution} {e.version}", e.description])
    if kind in (None, "protocol"):
        for name in protocol_names():
            p = load_protocol(name)
            rows.append(["protocol", name, "merbench (protocols/)", describe(p)])
    click.echo(tabulate(rows, headers=["kind", "name", "provided by", "description"],
                        tablefmt="simple"))


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
@click.option("--rerun", is_flag=True, help="Run again even if this exact run is finished.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run(protocol: str, method: str, data_root: tuple[str, ...], data_param: tuple[str, ...],
        seed: int, seeds: int | None, sets: tuple[str, ...], device: str, workers: str,
        store: str | None, cache_dir: str | None, no_cache: bool, inputs: str | None,
        checkpoints: str | None, skip_bad: bool, rerun: bool, quiet: bool, as_json: bool) -> None:
    """Run METHOD under PROTOCOL; an interrupted run resumes when run again."""
    from .methods import parse_value
    from .runner import run as do_run
    from .runner import run_seeds

    dparams: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(data_param, "--data-param").items():
        name, _, param = key.partition(".")
        if not param:
            raise ConfigError(f"--data-param {key} needs NAME.KEY", "e.g. synthetic.subjects=6")
        dparams.setdefault(name, {})[param] = parse_value(value)
    kwargs = dict(protocol=protocol, method=method, data_roots=_pairs(data_root, "--data-root"),
                  overrides=_pairs(sets, "--set"), device=device, workers=workers, store=store,
                  cache_dir=cache_dir, use_cache=not no_cache,
                  quiet=quiet or not sys.stderr.isatty(), dataset_params=dparams, inputs=inputs,
                  checkpoints=checkpoints, skip_bad=skip_bad, rerun=rerun)
    results = run_seeds(seeds=seeds, seed=seed, **kwargs) if seeds is not None \
        else do_run(seed=seed, **kwargs)
    if isinstance(results, list) and as_json:
        from .metrics import report_to_dict

        click.echo(json.dumps([{"run": r.run_id, "protocol": r.protocol.label, "method": r.method,
                                "seed": r.seed, **report_to_dict(r.report)} for r in results],
                              indent=2))
        return
    for result in results if isinstance(results, list) else [results]:
        _print_report(result, as_json)


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
    text = render(leaderboard_rows(st, protocol, not no_published), fmt)
    if output:
        from .atomic import write_text

        write_text(output, text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@cli.command()
@click.option("-o", "--output", default=None, type=click.Path(), help="Write the tables to DIR.")
@click.option("--store", default=None, help="Results store (default merbench-results/demo.sqlite).")
@click.option("--workers", default="auto", show_default=True, metavar="auto|N",
              help="Fold workers (see `merbench run --help`).")
def demo(output: str | None, store: str | None, workers: str) -> None:
    """Synthetic LOSO for the built-in methods that are fast enough, then the leaderboard."""
    from .demo import run_demo

    def say(line: str) -> None:
        click.echo(line)

    text = run_demo(store=store, output=output, workers=workers, echo=say)
    click.echo(text)


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

    facts = do_train(method, dataset, root=root, labels=labels, overrides=_pairs(sets, "--set"),
                     dataset_params={k: parse_value(v) for k, v in _pairs(param, "--param").items()},
                     seed=seed, device=device, output=output)
    click.echo(f"wrote {output}: {facts['method']} trained on {facts['trained_on']['samples']} "
               f"{dataset} samples, labels {', '.join(facts['labels'])}")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("clip", type=click.Path())
@click.option("--onset", type=int, default=None, help="Onset frame number (default: first).")
@click.option("--apex", type=int, default=None, help="Apex frame number (default: middle).")
@click.option("--offset", type=int, default=None, help="Offset frame number (default: last).")
@click.option("--json", "as_json", is_flag=True)
def predict(checkpoint: str, clip: str, onset: int | None, apex: int | None,
            offset: int | None, as_json: bool) -> None:
    """Class probabilities for a new CLIP (frames folder or video) from a trained CHECKPOINT."""
    from .deploy import predict as do_predict

    out = do_predict(checkpoint, clip, onset, apex, offset)
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
@click.option("--onset", type=int, default=None)
@click.option("--apex", type=int, default=None)
@click.option("--offset", type=int, default=None)
def explain(checkpoint: str, clip: str, output: str, onset: int | None, apex: int | None,
            offset: int | None) -> None:
    """Save a trained model's explanations for CLIP as PNG (Grad-CAM overlays, ...)."""
    from .deploy import explain as do_explain

    for path in do_explain(checkpoint, clip, output, onset, apex, offset):
        click.echo(f"wrote {path}")


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
    except KeyboardInterrupt:
        click.echo("Interrupted: finished folds are stored; run the same command to resume.",
                   err=True)
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
