"""Leaderboard rows from the results store and leaderboard/published.toml, and their tables.

This module is the one place that builds rows. Reproduced rows (runs in the store) and reported
rows (published numbers, with citations) are ranked together by pooled UF1 but always marked:
the ``source`` column says which, and they are never averaged. Several seeds of one method and
parameter set become one row, mean ± std over seeds, with a 95 % interval from a subject-level
bootstrap (:mod:`merbench.stats`). Data-quality facts (skipped samples, preprocessing fallbacks,
precomputed inputs, published weights, partial runs, identity leaks) are flags on every row in
every format, so a run on degraded data never looks like a clean result.

Every user-controlled string (protocol, method, parameter values, citations, notes) is escaped
for the format it lands in: markdown, CSV (no formula injection), LaTeX and HTML.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import html
import importlib.resources
import io
import json
import logging
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import make_dir, write_text
from .errors import ConfigError, DataError
from .protocols import load_protocol
from .runner import stored_report
from .stats import DEFAULT_BOOT, DEFAULT_LEVEL, Predictions, cluster_bootstrap, paired_bootstrap
from .store import RunRecord, Store

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "latex", "json", "html")
INTERVALS = ("bracket", "pm")
METRIC_DEFINITION = ("UF1 and UAR pooled over all folds (per-class TP, FP and FN summed over the "
                     "folds, then F1 and recall averaged over the classes: the MEGC2019 "
                     "definition)")


# -- reported rows -------------------------------------------------------------------------------
def published(protocol: str | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    """Reported numbers from published.toml, each with its citation."""
    if path is None:
        path = Path(str(importlib.resources.files("merbench_leaderboard"))) / "published.toml"
    data = tomllib.loads(Path(path).read_text())
    rows = []
    for r in data.get("result", []):
        if protocol and r["protocol"] != protocol:
            continue
        if not r.get("citation"):
            raise DataError(f"{path}: reported row {r.get('method')!r} has no citation")
        rows.append({"protocol": r["protocol"], "protocol_name": r["protocol"],
                     "method": r["method"], "method_name": r["method"], "source": "reported",
                     "seeds": None, "UF1": r.get("uf1"), "UAR": r.get("uar"),
                     "accuracy": r.get("accuracy"), "per_dataset": r.get("per_dataset", {}),
                     "citation": r["citation"], "note": r.get("note", ""), "runs": [],
                     "CI": None, "flags": [], "quality": {}, "vs_best": None})
    return rows


# -- reproduced rows -----------------------------------------------------------------------------
def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = np.array([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not vals.size:
        return {"mean": None, "std": None}
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0}


def is_partial(store: Store, rec: RunRecord) -> bool:
    """A smoke run (``--limit-folds``/``--subjects``): never shown as a complete result. (A run
    recorded as complete with folds missing is damaged instead, see ``Store.damage``.)"""
    return bool(rec.info.get("partial"))


def quality(store: Store, recs: Sequence[RunRecord]) -> dict[str, Any]:
    """The data-quality facts of a row's runs (worst over its seeds)."""
    fallbacks: dict[str, int] = {}
    for rec in recs:
        for note, count in (rec.info.get("fallbacks") or {}).items():
            fallbacks[note] = max(fallbacks.get(note, 0), int(count))
    done = [len(store.done_folds(rec.id)) for rec in recs]
    return {
        "skipped": max(len(rec.info.get("skipped") or {}) for rec in recs),
        "fallbacks": fallbacks,
        "inputs": next((rec.info["inputs"] for rec in recs if rec.info.get("inputs")), None),
        "checkpoints": next((rec.info["checkpoints"] for rec in recs
                             if rec.info.get("checkpoints")), None),
        "trained": all(rec.info.get("trained", True) for rec in recs),
        "partial": any(is_partial(store, rec) for rec in recs),
        "folds": min(done) if done else 0,
        "n_folds": max(int(rec.info.get("n_folds_protocol") or rec.info.get("n_folds") or 0)
                       for rec in recs) or None,
        "leaks_identity": any(rec.info.get("leaks_identity") for rec in recs),
    }


def flags(q: dict[str, Any]) -> list[str]:
    """Short, plain flags for a row's data-quality facts (the same words in every format)."""
    out = []
    if q.get("partial"):
        out.append(f"partial: {q['folds']} of {q['n_folds'] or '?'} folds")
    if q.get("leaks_identity"):
        out.append("leaks identity")
    if not q.get("trained", True):  # the paths tell rows apart that differ only in them
        out.append("published weights" + (f" ({_short_path(q['checkpoints'])})"
                                           if q.get("checkpoints") else ""))
    if q.get("inputs"):
        out.append(f"precomputed inputs ({_short_path(q['inputs'])})")
    if q.get("skipped"):
        out.append(f"{q['skipped']} samples skipped")
    for note, count in sorted((q.get("fallbacks") or {}).items()):
        out.append(f"fallback: {note} ({count} samples)")
    return out


def run_predictions(store: Store, run_id: str) -> Predictions:
    preds = store.predictions(run_id)
    return Predictions(tuple(p.sample_id for p in preds), tuple(p.y_true for p in preds),
                       tuple(p.y_pred for p in preds))


def _reproduced(store: Store, protocol: str | None, n_boot: int, boot_seed: int, level: float,
                include_partial: bool) -> tuple[list[dict[str, Any]], list[list[Predictions]]]:
    groups: dict[tuple[str, str, str], dict[int, RunRecord]] = {}
    for rec in store.runs(protocol=None, status="finished"):
        name = rec.info.get("protocol_name", rec.protocol)
        if protocol and name != protocol:
            continue
        partial = is_partial(store, rec)
        if not partial:
            damage = store.damage(rec.id)
            if damage:  # never a row from a run with folds missing
                log.warning("run %s (%s on %s) is left out: it is damaged: %s; rerun it with "
                            "--rerun", rec.id, rec.method, name, damage[0])
                continue
        if partial and not include_partial:
            continue
        blob = json.dumps({"p": rec.params, "i": rec.info.get("inputs"),
                           "c": rec.info.get("checkpoints"),
                           "d": rec.info.get("dataset_params"),
                           "s": rec.info.get("skip_bad", False), "partial": partial},
                          sort_keys=True)
        key = (rec.protocol, rec.method, hashlib.sha256(blob.encode()).hexdigest()[:8])
        groups.setdefault(key, {})[rec.seed] = rec  # later runs of a seed replace earlier ones
    variants: dict[tuple[str, str], int] = {}
    for (proto_label, method, _) in groups:
        variants[(proto_label, method)] = variants.get((proto_label, method), 0) + 1
    rows, all_preds = [], []
    for (proto_label, method, phash), by_seed in sorted(groups.items()):
        recs = [by_seed[s] for s in sorted(by_seed)]
        reports = [stored_report(store, rec)[0] for rec in recs]
        preds = [run_predictions(store, rec.id) for rec in recs]
        pooled = [r["pooled"] for r in reports]
        per_dataset: dict[str, Any] = {}
        for r in reports:
            for d, s in r.get("per_dataset", {}).items():
                per_dataset.setdefault(d, []).append(s)
        first = recs[0]
        changed = changed_params(method, first.params)
        text = ", ".join(f"{k}={v}" for k, v in changed.items())
        label = f"{method} ({text})" if text else method
        if variants[(proto_label, method)] > 1 and not text:
            label = f"{method} [{phash}]"
        tag = method_tag(method)
        if tag:  # e.g. "LTR3O-style": a design not yet checked against its paper
            label = f"{label} — {tag}"
        q = quality(store, recs)
        ci = cluster_bootstrap(preds, list(first.info["classes"]), n_boot, boot_seed, level) \
            if n_boot else None
        rows.append({
            "protocol": proto_label, "protocol_name": first.info.get("protocol_name", proto_label),
            "method": label, "method_name": method, "source": "reproduced",
            "seeds": sorted(by_seed),
            "UF1": _mean_std([s.uf1 for s in pooled]), "UAR": _mean_std([s.uar for s in pooled]),
            "accuracy": _mean_std([s.accuracy for s in pooled]),
            "per_dataset": {d: {"UF1": _mean_std([s.uf1 for s in ss]),
                                "UAR": _mean_std([s.uar for s in ss])}
                            for d, ss in sorted(per_dataset.items())},
            "fold_mean_std": reports[-1]["fold_mean_std"],
            "n_samples": max(len(p.ids) for p in preds),
            "runs": [rec.id for rec in recs], "params": first.params, "changed": changed,
            "classes": list(first.info["classes"]),
            "citation": "", "note": "", "CI": ci, "quality": q, "flags": flags(q),
            "vs_best": None,
        })
        all_preds.append(preds)
    return rows, all_preds


def reproduced(store: Store, protocol: str | None = None, n_boot: int = DEFAULT_BOOT,
               boot_seed: int = 0, level: float = DEFAULT_LEVEL,
               include_partial: bool = False) -> list[dict[str, Any]]:
    """One row per (protocol, method, parameters): the latest finished run of each seed.
    Partial runs are left out unless ``include_partial`` (then they are flagged)."""
    return _reproduced(store, protocol, n_boot, boot_seed, level, include_partial)[0]


def _short_path(path: str) -> str:
    """The last two parts of a path: enough to tell inputs or checkpoint folders apart."""
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if parts else str(path)


def method_tag(method: str) -> str:
    """The registered method's ``MethodSpec.tag`` ("" when none, or no longer installed)."""
    from .plugins import registry

    entry = registry()["method"].get(method)
    return str(getattr(entry.factory, "tag", "") or "") if entry is not None else ""


def changed_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a run set away from the method's defaults, e.g. ``{"model.epochs": 100}``."""
    from .methods import Method

    try:
        defaults = Method.named(method, {}).params()
    except Exception:  # noqa: BLE001 - a method no longer installed: show no difference
        return {}
    return {k: v for k, v in sorted(params.items()) if defaults.get(k) != v}


def _mark_best(rows: list[dict[str, Any]], preds: list[list[Predictions]], n_boot: int,
               boot_seed: int, level: float) -> None:
    """Mark, per protocol, the reproduced rows not significantly different from the best one
    (paired subject bootstrap of ΔUF1 on the same samples; rows on other samples are not
    compared)."""
    by_proto: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        if r["UF1"]["mean"] is not None:
            by_proto.setdefault(r["protocol"], []).append(k)
    for members in by_proto.values():
        best = max(members, key=lambda k: rows[k]["UF1"]["mean"])
        rows[best]["vs_best"] = {"best": True}
        ids = sorted(preds[best][0].ids)
        for k in members:
            if k == best or any(sorted(p.ids) != ids for p in preds[k] + preds[best]):
                continue
            test = paired_bootstrap(preds[k], preds[best], list(rows[k]["classes"]), n_boot,
                                    boot_seed, level)["UF1"]
            rows[k]["vs_best"] = {"best": False, "against": rows[best]["method"],
                                  "delta_UF1": test["delta"], "interval": test["interval"],
                                  "p": test["p"], "same": test["p"] >= 1 - level}


def leaderboard_rows(store: Store | None, protocol: str | None = None,
                     include_published: bool = True, n_boot: int = DEFAULT_BOOT,
                     boot_seed: int = 0, level: float = DEFAULT_LEVEL,
                     include_partial: bool = False) -> list[dict[str, Any]]:
    """All rows, per protocol ranked by pooled UF1 (reported and reproduced interleaved, each
    marked). ``n_boot=0`` leaves the bootstrap intervals and the comparison with the best out."""
    if protocol:
        load_protocol(protocol)  # unknown names fail here, clearly
    rows: list[dict[str, Any]] = []
    if store is not None:
        rows, preds = _reproduced(store, protocol, n_boot, boot_seed, level, include_partial)
        if n_boot:
            _mark_best(rows, preds, n_boot, boot_seed, level)
    if include_published:
        rows += published(protocol)
    rows.sort(key=lambda r: (r["protocol"], _value(r["UF1"]) is None, -(_value(r["UF1"]) or 0),
                             r["source"] != "reproduced", r["method"]))
    return rows


def _value(x: Any) -> float | None:
    return x["mean"] if isinstance(x, dict) else x


# -- reproducing a run ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _protocol_argument(name: str, source: str) -> str:
    """The --protocol a user types: the name when it resolves to the same file, else the path."""
    try:
        if not source or Path(load_protocol(name).source).resolve() == Path(source).resolve():
            return name
    except Exception:  # noqa: BLE001 - not an installed protocol name: use its file
        pass
    return source


def _set_value(value: Any) -> str:
    from .methods import parse_value

    if isinstance(value, str) and parse_value(value) == value:
        return value
    return repr(value)


def reproduce_command(rec: RunRecord) -> str:
    """The ``merbench run`` command line that reproduces a stored run (shell-quoted)."""
    info = rec.info
    name = info.get("protocol_name", rec.protocol)
    args = ["merbench", "run", "--protocol",
            _protocol_argument(name, str(info.get("protocol_source") or "")),
            "--method", rec.method]
    for key, value in changed_params(rec.method, rec.params).items():
        args += ["--set", f"{key}={_set_value(value)}"]
    args += ["--seed", str(rec.seed)]
    for dname, root in sorted((info.get("data_roots") or {}).items()):
        args += ["--data-root", f"{dname}={root}"]
    for dname, params in sorted((info.get("dataset_params") or {}).items()):
        for key, value in sorted(params.items()):
            args += ["--data-param", f"{dname}.{key}={_set_value(value)}"]
    if info.get("inputs"):
        args += ["--inputs", str(info["inputs"])]
    if info.get("checkpoints"):
        args += ["--checkpoints", str(info["checkpoints"])]
    if info.get("skip_bad"):
        args.append("--skip-bad")
    limits = info.get("limits") or {}
    if limits.get("limit_folds"):
        args += ["--limit-folds", str(limits["limit_folds"])]
    if limits.get("subjects"):
        args += ["--subjects", ",".join(map(str, limits["subjects"]))]
    return " ".join(shlex.quote(a) for a in args)


# -- paired comparison ---------------------------------------------------------------------------
def resolve(store: Store, protocol: str, what: str) -> tuple[str, list[RunRecord]]:
    """A run id (or unique prefix) or a method/row name under ``protocol`` -> (label, runs)."""
    recs = [r for r in store.runs(status="finished")
            if r.info.get("protocol_name", r.protocol) == protocol]
    by_id = [r for r in recs if r.id == what or r.id.startswith(what)]
    if len(by_id) == 1:
        r = by_id[0]
        return f"{r.method} (run {r.id}, seed {r.seed})", by_id
    rows = [r for r in reproduced(store, protocol, n_boot=0, include_partial=True)
            if what in (r["method"], r["method_name"])]
    if len(rows) == 1:
        runs = [store.run(i) for i in rows[0]["runs"]]
        return f"{rows[0]['method']} ({len(runs)} seed{'s' * (len(runs) > 1)})", runs
    if len(rows) > 1:
        raise ConfigError(f"{what!r} names {len(rows)} rows under {protocol}: "
                          + "; ".join(f"{r['method']} (runs {', '.join(r['runs'])})"
                                      for r in rows), "name a run id or the full row label")
    known = sorted({r.method for r in recs})
    raise ConfigError(f"no finished run or method {what!r} under protocol {protocol} in "
                      f"{store.path}", f"known methods: {', '.join(known) or '(none)'}")


def _sample_difference(a: Predictions, b: Predictions, name_a: str, name_b: str) -> str | None:
    ids_a, ids_b = set(a.ids), set(b.ids)
    if ids_a == ids_b:
        truth_a, truth_b = dict(zip(a.ids, a.true)), dict(zip(b.ids, b.true))
        diff = [i for i in sorted(ids_a) if truth_a[i] != truth_b[i]]
        if diff:
            return (f"{len(diff)} samples have different true labels in {name_a} and {name_b} "
                    f"({', '.join(diff[:5])})")
        return None
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    parts = [f"{name_a} has {len(ids_a)} samples, {name_b} {len(ids_b)}"]
    if only_a:
        parts.append(f"only in {name_a}: {', '.join(only_a[:5])}" + (" ..." if len(only_a) > 5
                                                                      else ""))
    if only_b:
        parts.append(f"only in {name_b}: {', '.join(only_b[:5])}" + (" ..." if len(only_b) > 5
                                                                      else ""))
    return "; ".join(parts)


def compare(store: Store, protocol: str, a: str, b: str, n_boot: int = DEFAULT_BOOT,
            seed: int = 0, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Paired comparison of two runs (or rows) on the same samples: paired subject-level
    bootstrap of ΔUF1/ΔUAR and, for one run per side, McNemar's test on per-sample correctness.
    Refuses runs whose sample sets (or ground truth) differ, naming the difference."""
    from .stats import mcnemar

    label_a, runs_a = resolve(store, protocol, a)
    label_b, runs_b = resolve(store, protocol, b)
    preds_a = [run_predictions(store, r.id) for r in runs_a]
    preds_b = [run_predictions(store, r.id) for r in runs_b]
    named = [(f"run {r.id}", p) for r, p in zip(runs_a + runs_b, preds_a + preds_b)]
    for name, p in named[1:]:
        diff = _sample_difference(named[0][1], p, named[0][0], name)
        if diff:
            raise DataError(f"cannot compare: the runs differ in their samples: {diff}",
                            "compare runs made on the same sample set (same protocol, "
                            "no --skip-bad differences)")
    classes = list(runs_a[0].info["classes"])
    if any(list(r.info["classes"]) != classes for r in runs_a + runs_b):
        raise DataError("cannot compare: the runs have different class lists")
    out = {"protocol": protocol, "A": {"label": label_a, "runs": [r.id for r in runs_a]},
           "B": {"label": label_b, "runs": [r.id for r in runs_b]},
           "samples": len(preds_a[0].ids),
           "bootstrap": paired_bootstrap(preds_a, preds_b, classes, n_boot, seed, level),
           "mcnemar": None}
    if len(runs_a) == 1 and len(runs_b) == 1:
        pa = dict(zip(preds_a[0].ids, zip(preds_a[0].true, preds_a[0].pred)))
        pb = dict(zip(preds_b[0].ids, preds_b[0].pred))
        ids = sorted(pa)
        out["mcnemar"] = mcnemar([pa[i][0] == pa[i][1] for i in ids],
                                 [pa[i][0] == pb[i] for i in ids])
    return out


# -- escaping ------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def esc_md(text: Any) -> str:
    """Markdown-safe text: HTML entities for & < >, markdown punctuation escaped, one line."""
    s = " ".join(str(text).split())
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc_csv(text: Any) -> str:
    """A CSV text cell that no spreadsheet runs as a formula (OWASP: prefix with ')."""
    s = "" if text is None else str(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


_TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
        "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


def esc_tex(text: Any) -> str:
    """LaTeX-safe text (every special character, one line)."""
    return _TEX_RE.sub(lambda m: _TEX[m.group(0)], " ".join(str(text).split()))


def esc_html(text: Any) -> str:
    return html.escape(str(text), quote=True)


# -- rendering -----------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def fmt_value(x: Any, seeds: Sequence[int] | None, sep: str = " ± ") -> str:
    """A metric cell: the reported value, or mean (± std over seeds when there are several)."""
    if isinstance(x, dict):
        if x["mean"] is None:
            return "undefined"
        return f"{x['mean']:.4f}" if not seeds or len(seeds) < 2 else \
            f"{x['mean']:.4f}{sep}{x['std']:.4f}"
    return "" if x is None else f"{x:.4f}"


def fmt_interval(row: dict[str, Any], metric: str, style: str = "bracket",
                 pm: str = "± ") -> str:
    """The bootstrap interval of a row as ``[lo, hi]`` or ``± half-width``; '' without one."""
    ci = (row.get("CI") or {}).get(metric)
    if not ci:
        return ""
    if style == "pm":
        return f"{pm}{(ci[1] - ci[0]) / 2:.4f}"
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def row_marks(row: dict[str, Any]) -> list[str]:
    """Flags plus the comparison with the best row, as shown in the tables."""
    marks = list(row.get("flags") or [])
    vb = row.get("vs_best")
    if vb and vb.get("best"):
        marks.append("best reproduced")
    elif vb and vb.get("same"):
        marks.append(f"≈ best (p={vb['p']:.2f})")
    return marks


def _datasets(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({d for r in rows for d in r["per_dataset"]})


def _by_protocol(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(p, [r for r in rows if r["protocol"] == p])
            for p in sorted({r["protocol"] for r in rows})]


def _level(rows: Sequence[dict[str, Any]]) -> tuple[int, int | None]:
    ci = next((r["CI"] for r in rows if r.get("CI")), None)
    return (round(100 * ci["level"]), ci["n_boot"]) if ci else (round(100 * DEFAULT_LEVEL), None)


def _md(rows: list[dict[str, Any]], interval: str) -> str:
    from tabulate import tabulate

    out = []
    for proto, prows in _by_protocol(rows):
        datasets = _datasets(prows)
        pct, n_boot = _level(prows)
        header = ["method", "source", "seeds", "UF1", f"UF1 {pct}% CI", "UAR", f"UAR {pct}% CI",
                  "accuracy"]
        header += [f"{esc_md(d)} {m}" for d in datasets for m in ("UF1", "UAR")] + ["flags"]
        body = []
        for r in prows:
            seeds = r["seeds"]
            line = [esc_md(r["method"]), r["source"], len(seeds) if seeds else "",
                    fmt_value(r["UF1"], seeds), fmt_interval(r, "UF1", interval),
                    fmt_value(r["UAR"], seeds), fmt_interval(r, "UAR", interval),
                    fmt_value(r["accuracy"], seeds)]
            for d in datasets:
                pd = r["per_dataset"].get(d, {})
                line += [fmt_value(pd.get("UF1"), seeds), fmt_value(pd.get("UAR"), seeds)]
            line.append(esc_md("; ".join(row_marks(r))))
            body.append(line)
        table = tabulate(body, headers=header, tablefmt="github", disable_numparse=True)
        title = (f"### {esc_md(proto)}\n\nHeadline {METRIC_DEFINITION}. Reproduced rows: mean "
                 f"± std over seeds"
                 + (f"; {pct}% interval from a subject-level bootstrap (B={n_boot})"
                    if n_boot else "") + ". Rows ranked by UF1; reported rows are as printed "
                 "in the cited papers.")
        notes = [f"- {esc_md(r['method'])}: {esc_md(r['citation'])}"
                 + (f" ({esc_md(r['note'])})" if r["note"] else "")
                 for r in prows if r["source"] == "reported"]
        out.append("\n\n".join([title, table] + (["Reported rows:\n" + "\n".join(notes)]
                                                 if notes else [])))
    return "\n\n".join(out) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    for n, (proto, prows) in enumerate(_by_protocol(rows)):
        datasets = _datasets(prows)
        header = ["protocol", "method", "source", "seeds", "UF1", "UAR", "accuracy", "UF1 std",
                  "UAR std", "accuracy std", "UF1 CI low", "UF1 CI high", "UAR CI low",
                  "UAR CI high"]
        header += [f"{d} {m}" for d in datasets for m in ("UF1", "UAR")]
        header += ["flags", "vs best p", "citation", "note", "runs"]
        if n:
            w.writerow([])
        w.writerow([esc_csv(h) for h in header])
        for r in prows:
            std = [_num(r[m]["std"]) if isinstance(r[m], dict) else ""
                   for m in ("UF1", "UAR", "accuracy")]
            ci = [_num(v) for m in ("UF1", "UAR") for v in ((r.get("CI") or {}).get(m) or
                                                              (None, None))]
            per = [_num(_value(r["per_dataset"].get(d, {}).get(m)))
                   for d in datasets for m in ("UF1", "UAR")]
            vb = r.get("vs_best") or {}
            w.writerow([esc_csv(proto), esc_csv(r["method"]), r["source"],
                        len(r["seeds"]) if r["seeds"] else ""]
                       + [_num(_value(r[m])) for m in ("UF1", "UAR", "accuracy")] + std + ci + per
                       + [esc_csv("; ".join(r.get("flags") or [])),
                          _num(vb.get("p")) if "p" in vb else "", esc_csv(r["citation"]),
                          esc_csv(r["note"]), " ".join(r["runs"])])
    return buf.getvalue()


def _latex(rows: list[dict[str, Any]], interval: str) -> str:
    out = []
    for proto, prows in _by_protocol(rows):
        datasets = _datasets(prows)
        pct, n_boot = _level(prows)
        metrics = [("UF1", lambda r: r["UF1"]), ("UAR", lambda r: r["UAR"]),
                   ("Acc.", lambda r: r["accuracy"])]
        for d in datasets:
            for m in ("UF1", "UAR"):
                metrics.append((f"{esc_tex(d)} {m}",
                                lambda r, d=d, m=m: r["per_dataset"].get(d, {}).get(m)))
        best = [max((v for v in (_value(get(r)) for r in prows) if v is not None), default=None)
                for _, get in metrics]
        cites = [r for r in prows if r["source"] == "reported"]
        lines = [f"% merbench leaderboard: {esc_tex(proto)}", r"\begin{table}[t]", r"\centering",
                 r"\small"]
        ci_text = ""
        if n_boot:
            ci_text = (f" UF1 and UAR of reproduced rows are the mean over seeds with a {pct}\\,\\% "
                       "interval from a subject-level (cluster) bootstrap, B=" f"{n_boot}, "
                       + ("given as $\\pm$ half its width." if interval == "pm"
                          else "given as [low, high]."))
        cite_text = "".join(f" [{k}] {esc_tex(r['citation'])}." for k, r in enumerate(cites, 1))
        lines.append(r"\caption{Protocol \texttt{" + esc_tex(proto) + "}: "
                     + esc_tex(METRIC_DEFINITION) + "." + ci_text
                     + " Best value per column in bold. Reported rows are numbers printed in "
                     "the cited papers." + cite_text + "}")
        lines.append(r"\label{tab:merbench-" + re.sub(r"[^A-Za-z0-9-]+", "-", proto) + "}")
        lines.append(r"\begin{tabular}{llr" + "l" * len(metrics) + "l}")
        lines.append(r"\toprule")
        lines.append(" & ".join(["Method", "Source", "Seeds"] + [m for m, _ in metrics]
                                + ["Notes"]) + r" \\")
        lines.append(r"\midrule")
        for r in prows:
            seeds = r["seeds"]
            source = "reproduced" if r["source"] == "reproduced" else \
                f"reported [{cites.index(r) + 1}]"
            cells = [esc_tex(r["method"]), source, str(len(seeds)) if seeds else ""]
            for k, (name, get) in enumerate(metrics):
                v = _value(get(r))
                if v is None:
                    cells.append("--" if get(r) is None else "undefined")
                    continue
                text = f"{v:.4f}"
                cells.append(r"\textbf{" + text + "}" if best[k] is not None and
                             round(v, 4) == round(best[k], 4) else text)
                if name in ("UF1", "UAR"):
                    iv = fmt_interval(r, name, interval, pm=r"$\pm$ ")
                    if iv:
                        cells[-1] += " " + iv
            cells.append(esc_tex("; ".join(row_marks(r))).replace("≈", r"$\approx$"))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def render(rows: list[dict[str, Any]], fmt: str = "md", interval: str = "bracket") -> str:
    """Tables (one per protocol) in md / csv / latex / html, or all rows as json.

    ``interval``: show bootstrap intervals as ``[lo, hi]`` ("bracket") or ``± half-width``
    ("pm")."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if interval not in INTERVALS:
        raise ConfigError(f"unknown interval style {interval!r}", "use bracket or pm")
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "md":
        return _md(rows, interval)
    if fmt == "csv":
        return _csv(rows)
    if fmt == "latex":
        return _latex(rows, interval)
    from .site import standalone_tables

    return standalone_tables(rows, interval)


def write_tables(rows: list[dict[str, Any]], directory: str | Path, stem: str,
                 interval: str = "bracket") -> list[Path]:
    directory = make_dir(directory, "output folder")
    paths = []
    for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex"), ("json", "json"),
                     ("html", "html")):
        path = directory / f"{stem}.{ext}"
        write_text(path, render(rows, fmt, interval))
        paths.append(path)
    return paths
